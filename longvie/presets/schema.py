"""Config files checked by name: every key of a YAML config must be known.

An unknown key is reported with the file, its line and the closest known key (:mod:`difflib`), as a
full key path (``sampling.steps``, ``degradation.depth_p``); a key that exists in another section is
pointed there. Used by the sampling configs (:func:`longvie.longvideo.preflight.check_config_file`)
and the training stage configs and ``--set`` overrides (:mod:`longvie.train.config`).

A schema is a nested dict: a key whose value is a dict is a section with those keys; any other value
(``None``, a type tuple) is a leaf. The check only looks at names; types and ranges are checked by
the command that reads the config.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable

__all__ = ["closest_key", "unknown_key_message", "yaml_key_problems", "schema_of", "key_paths",
           "model_section_schema", "model_key_problems"]


def key_paths(schema: dict, prefix: str = "") -> dict[str, str]:
    """{dotted path: last name} of every key of ``schema``, sections included."""
    paths = {}
    for key, value in schema.items():
        paths[prefix + key] = key
        if isinstance(value, dict):
            paths.update(key_paths(value, f"{prefix}{key}."))
    return paths


def closest_key(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (difflib ratio >= 0.6), or None."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_message(key: str, section: str, known: dict, schema: dict | None = None,
                        section_label: str | None = None) -> str:
    """"unknown key 'sampling.stpes' — did you mean 'sampling.steps'?" (no file or line).

    Args:
        key: the unknown name; section: its section's dotted path plus "." ("" at the top).
        known: the section's keys. schema: the whole schema, to point at the same name in another
            section. section_label: how to name the section in the list of known keys.
    """
    full = f"{section}{key}"
    paths = key_paths(schema) if schema is not None else {}
    elsewhere = sorted(path for path, name in paths.items() if name == key and path != full and "." in path)
    if elsewhere:  # the right name in the wrong section
        sections = " or ".join(f"'{path.rsplit('.', 1)[0]}'" for path in elsewhere[:3])
        return f"unknown key '{full}' — '{key}' belongs under {sections} ('{elsewhere[0]}')"
    close = closest_key(key, known)
    if close is not None:
        return f"unknown key '{full}' — did you mean '{section}{close}'?"
    if paths:
        close = closest_key(full, paths)
        if close is not None:
            return f"unknown key '{full}' — did you mean '{close}'?"
    where = section_label or (f"'{section[:-1]}'" if section else "the top level")
    return f"unknown key '{full}' (known keys of {where}: {', '.join(known)})"


def yaml_key_problems(path: str | Path, node, schema: dict, section: str = "",
                      root_schema: dict | None = None) -> list[str]:
    """Unknown keys of a composed YAML mapping node (``yaml.compose``), each as
    ``"FILE:LINE: unknown key 'a.b' — did you mean 'a.c'?"``, and sections given as something else."""
    import yaml

    root_schema = schema if root_schema is None else root_schema
    problems = []
    if not isinstance(node, yaml.MappingNode):
        return problems
    for key_node, value_node in node.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key not in schema:
            problems.append(f"{path}:{line}: {unknown_key_message(key, section, schema, root_schema)}")
            continue
        sub = schema[key]
        if isinstance(sub, dict):
            if isinstance(value_node, yaml.MappingNode):
                problems += yaml_key_problems(path, value_node, sub, f"{section}{key}.", root_schema)
            elif not (isinstance(value_node, yaml.ScalarNode) and value_node.tag.endswith(":null")):
                problems.append(f"{path}:{line}: '{section}{key}' is a section: give its keys indented below it "
                                f"({', '.join(list(sub)[:6])}{', ...' if len(sub) > 6 else ''})")
    return problems


def schema_of(config: dict) -> dict:
    """The schema of a config dict (its sections and keys; every value a leaf unless a dict)."""
    return {key: schema_of(value) if isinstance(value, dict) else None for key, value in config.items()}


def model_section_schema() -> dict:
    """The keys of a config's ``model:`` section (the tiny preset's model sizes): the constructor
    arguments of diffusers' WanTransformer3DModel and AutoencoderKLWan and the fields of transformers'
    UMT5Config and CLIPVisionConfig, as installed, so a misspelt size is refused by name."""
    import inspect

    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, UMT5Config

    def arguments(cls) -> dict:
        return {name: None for name, p in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    return {"transformer": arguments(WanTransformer3DModel), "control_layers": None,
            "vae": arguments(AutoencoderKLWan), "text_encoder": dict.fromkeys(UMT5Config().to_dict()),
            "image_encoder": dict.fromkeys(CLIPVisionConfig().to_dict())}


def model_key_problems(config_file) -> list[str]:
    """Unknown keys of a sampling config's ``model:`` section, for commands that read only that
    section (the memory estimator); the sampling command checks the whole file."""
    import yaml

    path = Path(config_file)
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # reading the config reports these
    if not isinstance(root, yaml.MappingNode):
        return []
    for key_node, value_node in root.value:
        if key_node.value == "model":
            return yaml_key_problems(path, value_node, model_section_schema(), "model.")
    return []
