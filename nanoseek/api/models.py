"""GET /models: the public model names this server answers to: DeepSeek's (seed-era and 2026), then the served
checkpoint's own name (serving.checkpoint_names); all backed by the configured checkpoint unless mapped."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from nanoseek.api.auth import identify_key
from nanoseek.api.chat import ERROR_RESPONSES
from nanoseek.api.protocol import ModelCard, ModelList

router = APIRouter()


@router.get(
    "/models",
    response_model=ModelList,
    responses={401: ERROR_RESPONSES[401]},
    dependencies=[Depends(identify_key)],
    summary="List models",
)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[ModelCard(id=name) for name in request.app.state.registry.listed])
