"""GET /user/balance: what the calling key may still spend, in DeepSeek's balance shape.

nanoseek meters tokens, not money, so the currency is "TOKENS" and the amounts are token counts (strings,
as DeepSeek writes amounts). A key without a quota is reported available with an empty balance list.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from nanoseek.api.auth import identify_key
from nanoseek.api.chat import ERROR_RESPONSES
from nanoseek.api.protocol import Balance, BalanceInfo
from nanoseek.api.settings import KeyPolicy

router = APIRouter()


@router.get(
    "/user/balance",
    response_model=Balance,
    responses={401: ERROR_RESPONSES[401]},
    summary="Get the calling key's balance",
)
async def user_balance(request: Request, policy: KeyPolicy = Depends(identify_key)) -> Balance:
    remaining = request.app.state.gate.remaining_tokens(policy)
    if remaining is None:
        return Balance(is_available=True, balance_infos=[])
    info = BalanceInfo(
        currency="TOKENS", total_balance=str(remaining), granted_balance=str(remaining), topped_up_balance="0"
    )
    return Balance(is_available=remaining > 0, balance_infos=[info])
