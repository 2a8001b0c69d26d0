"""Parsing, writing and reading values."""

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


class ParseError(ValueError):
    def __init__(self, lineno, reason):
        super().__init__(f"line {lineno}: {reason}")
        self.lineno = lineno


def parse(text):
    config = {}
    section = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip()
            if not name:
                raise ParseError(lineno, "empty section name")
            if name in config:
                raise ParseError(lineno, f"duplicate section: {name}")
            section = config[name] = {}
        elif "=" in line:
            key, value = line.split("=", 1)
            key = key.strip().lower()
            if not key:
                raise ParseError(lineno, "empty key")
            if section is None:
                raise ParseError(lineno, "key outside a section")
            section[key] = value.strip()
        else:
            raise ParseError(lineno, "invalid line")
    return config


def dumps(config):
    blocks = []
    for name, values in config.items():
        lines = [f"[{name}]"] + [f"{key} = {value}" for key, value in values.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def get(config, section, key, default=None):
    return config.get(section, {}).get(key.lower(), default)


def get_int(config, section, key, default=None):
    value = get(config, section, key)
    if value is None:
        return default
    return int(value)


def get_bool(config, section, key, default=None):
    value = get(config, section, key)
    if value is None:
        return default
    word = value.lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ValueError(f"not a boolean: {value}")
