"""The layout functions."""


def _check_width(width):
    if not isinstance(width, int) or width < 1:
        raise ValueError("width must be at least 1")


def wrap(text, width):
    _check_width(width)
    lines = []
    current = ""
    for word in text.split():
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def fill(text, width):
    return "\n".join(wrap(text, width))


def _widen(line, width):
    words = line.split(" ")
    gaps = len(words) - 1
    if gaps == 0:
        return line.ljust(width)
    base, extra = divmod(width - len(line) + gaps, gaps)
    out = words[0]
    for i, word in enumerate(words[1:]):
        out += " " * (base + (1 if i < extra else 0)) + word
    return out


def justify(text, width):
    lines = wrap(text, width)
    return [_widen(line, width) for line in lines[:-1]] + lines[-1:]


def truncate(text, width, placeholder="..."):
    _check_width(width)
    if width < len(placeholder):
        raise ValueError("width too small for placeholder")
    if len(text) <= width:
        return text
    return text[: width - len(placeholder)] + placeholder
