"""Kubernetes resource quantities (``2Gi``, ``2G``, ``1500Mi``, ``1.5e9``) as numbers of bytes."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
# The grammar of k8s.io/apimachinery's resource.Quantity: a signed decimal number, then a
# binary suffix, a decimal suffix, or an exponent.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_QUANTITY = re.compile(rf"({_NUMBER})(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|m|k|M|G|T|P|E|)")


def quantity_bytes(quantity: str | int) -> int:
    """The bytes a quantity stands for, rounded up as Kubernetes rounds storage requests.

    Raises ValueError for text that is not a quantity.
    """
    if isinstance(quantity, int):
        return quantity
    match = _QUANTITY.fullmatch(quantity)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number, suffix = Decimal(match[1]), match[2]
    if suffix in _BINARY:
        value = number * 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * Decimal(1000) ** _DECIMAL[suffix]
    else:
        value = number.scaleb(int(suffix[1:]))
    return int(value.to_integral_value(rounding=ROUND_CEILING))
