"""Authorize phase: may this requester have this certificate."""

from __future__ import annotations

import re

from gateway.errors import FailInfo, ScepFailure
from gateway.policy import dn
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv


class SubjectPattern:
    """``authorize.subject_pattern``: a requested DN field must fully match a pattern."""

    def __init__(self, field: str, pattern: str | re.Pattern[str]) -> None:
        self._field = field
        self._pattern = re.compile(pattern)

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        csr = ctx.request.csr
        found = dn.values(csr.subject, self._field) if csr else []
        if not found or not all(self._pattern.fullmatch(v) for v in found):
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                f"the requested {self._field} is not allowed here",
                detail=f"{self._field}={found!r} does not match {self._pattern.pattern!r}",
            )
        return ctx
