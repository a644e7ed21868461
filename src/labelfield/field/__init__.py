"""Neural fields: the multiresolution hash encoding (and, later, direction encodings and heads)."""

from labelfield.field.hashgrid import HashGrid

__all__ = ["HashGrid"]
