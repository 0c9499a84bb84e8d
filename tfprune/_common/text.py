"""Text shared by reports and errors: aligned tables, an error's first line, name lists."""


def format_table(header, rows, right=()):
    """Aligned text lines: the header, a rule of dashes, then one line per row.

    Columns whose index is in ``right`` align right (numbers); the others align left.

    Returns:
        A list of strings (join them with newlines).

    Example:

    ```python
    print("\n".join(format_table(["layer", "sparsity"], [["dense", "80.0%"]], right={1})))
    ```
    """
    table = [[str(v) for v in header]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(values):
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()

    head = line(table[0])
    return [head, "-" * len(head)] + [line(row) for row in table[1:]]


def first_line(error, default="no message"):
    """The first non-blank line of an exception or text, stripped."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return default


def list_names(names, limit=12):
    """``'a', 'b', ... (40 in all)``: names for an error message, cut after ``limit``."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
