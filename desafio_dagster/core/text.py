"""Text folding shared by the generator (embossed names, e-mails) and the output contract (file names)."""

import unicodedata


def fold_ascii(text: str) -> str:
    """'João Conceição' -> 'Joao Conceicao'."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
