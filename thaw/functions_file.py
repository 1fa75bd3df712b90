"""Function files (TOML): read, resolve relative paths, validate with the bus schema."""

import tomllib
from pathlib import Path

from bus_schemas.codec import DecodeError, convert
from bus_schemas.functions import FunctionSpec, SpecError, check_function_spec


class FunctionFileError(ValueError):
    pass


def load_function_file(path: Path) -> FunctionSpec:
    """The spec declared in `path`. Command parts naming files beside it become absolute."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise FunctionFileError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FunctionFileError(f"{path} is not valid TOML: {exc}") from None
    if isinstance(data.get("command"), list):
        data["command"] = [_resolve(path.parent, part) for part in data["command"]]
    try:
        return check_function_spec(convert(data, FunctionSpec))
    except (DecodeError, SpecError) as exc:
        raise FunctionFileError(f"{path}: {exc}") from None


def _resolve(base: Path, part):
    if isinstance(part, str) and not part.startswith(("{", "-", "/")) and (base / part).exists():
        return str((base / part).resolve())
    return part
