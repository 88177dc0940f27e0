"""The lists in README.md that the tree can say for itself, rendered from the tree.

    python tools/readme_lists.py           # rewrite README.md's generated blocks in place
    python tools/readme_lists.py --check   # exit 1 and name the blocks that are out of date

A generated block sits between ``<!-- generated:NAME -->`` and ``<!-- /generated -->`` (on lines
of their own for a table, or inline inside a sentence); everything outside the markers is
hand-written and left alone. What each block is made of:

- ``config-groups``: every group under conf/ (a folder of .yaml files, ``hydra/*`` included;
  ``sweep`` has its own block), its default from conf/train.yaml's defaults list, and per option
  the first sentence of the file's leading comment (``# @package`` lines skipped).
- ``sweeps``: every sweeps/NAME.yaml with the sweeper its defaults pick (``override /sweeper``)
  and the first sentence of its ``# Question:`` header; a folder in sweeps/results/ is linked.
- ``workloads``: every workload in the registry (pinchpoint/workloads/registry.py), its model
  options (the conf/model files whose ``name:`` is the workload), the first sentence of
  conf/model/NAME.yaml, its default dataset, and its code folder.
- ``parallel-presets``, ``gpu-presets``, ``benchmarks``: inline lists of conf/parallel,
  conf/gpu and benchmarks/*.py.
- ``optuna-pin``: the optuna requirement in pyproject.toml.

tests/test_readme.py fails when README.md differs from what this renders.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SWEEPS = ROOT / "sweeps"
README = ROOT / "README.md"
COMMAND = "python tools/readme_lists.py"

BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z0-9-]+) -->)(?P<body>.*?)(<!-- /generated -->)",
                   re.S)
LONG = 200        # a first sentence longer than this ends at its last top-level ":" or ";" before it
ABBREVIATIONS = ("e.g", "i.e", "vs", "etc", "cf")


# -- the leading comment of a yaml file ---------------------------------------------------------

def leading_comment(path: Path) -> str:
    """The file's first block of comment lines, joined, ``# @package`` lines left out."""
    lines: list[str] = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text.startswith("#"):
            if lines or text:
                break
            continue
        body = text.lstrip("#").strip()
        if body.startswith("@package"):
            continue
        if not body:
            if lines:
                break
            continue
        lines.append(body)
    text = ""
    for body in lines:              # a path broken after its '/' joins without a space
        text += body if text.endswith("/") or not text else " " + body
    return text


def _top_level(text: str):
    """(index, char, depth) for each character; depth counts (), [] and `code`."""
    depth, code = 0, False
    for i, ch in enumerate(text):
        if ch == "`":
            code = not code
        elif not code and ch in "([":
            depth += 1
        elif not code and ch in ")]":
            depth = max(0, depth - 1)
        yield i, ch, depth + code


def first_sentence(text: str, cut: bool = True) -> str:
    """Up to the first '.', '?' or '!' that ends a sentence outside brackets and code; with
    ``cut``, a sentence over LONG characters ends at its last top-level ':' or ';' before that."""
    for i, ch, depth in _top_level(text):
        if depth or ch not in ".?!" or (i + 1 < len(text) and text[i + 1] != " "):
            continue
        word = re.split(r"[\s(]", text[:i])[-1]
        if ch == "." and word.lower() in ABBREVIATIONS:
            continue
        text = text[:i + 1]
        break
    if cut and len(text) > LONG:
        ends = [i for i, ch, depth in _top_level(text[:LONG])
                if not depth and ch in ":;" and text[i + 1:i + 2] == " "]
        if ends:
            return text[:ends[-1]].rstrip(",") + "."
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# -- what the tree holds ------------------------------------------------------------------------

def defaults() -> dict[str, str]:
    """conf/train.yaml's group choices, hydra/<group> overrides included."""
    chosen = {}
    for entry in yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            chosen[key.removeprefix("override ").strip()] = str(value)
    return chosen


def groups() -> dict[str, list[Path]]:
    """group -> its option files: every folder under conf/ that holds .yaml files."""
    found = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        group = folder.relative_to(CONF).as_posix()
        if group == "sweep" or group.startswith("sweep/"):
            continue
        options = sorted(folder.glob("*.yaml"))
        if options:
            found[group] = options
    return found


def config_groups_table() -> str:
    chosen = defaults()
    rows = ["| group | default | option | what it is (first line of `conf/GROUP/OPTION.yaml`) |",
            "|---|---|---|---|"]
    for group, options in groups().items():
        default = chosen.get(group)
        if default is None:
            shown = f"none: `+{group}=NAME`"
        elif "${" in default:
            shown = "from `sweeper`"
        else:
            shown = f"`{default}`"
        for n, option in enumerate(options):
            rows.append(f"| {f'`{group}/`' if n == 0 else ''} | {shown if n == 0 else ''} | "
                        f"`{option.stem}` | {_cell(first_sentence(leading_comment(option)))} |")
    return "\n".join(rows)


def sweeper_of(path: Path) -> str:
    data = yaml.safe_load(path.read_text()) or {}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            if key.replace(" ", "") in ("override/sweeper", "/sweeper"):
                return str(value)
    return defaults().get("sweeper", "pinchpoint_grid")


def question(path: Path) -> str:
    text = leading_comment(path)
    if "Question:" in text:
        text = text.split("Question:", 1)[1].strip()
    return first_sentence(text, cut=False)


def sweeps_table() -> str:
    rows = ["| `+sweep=` | sweeper | question (its `# Question:` header) | committed report |",
            "|---|---|---|---|"]
    for path in sorted(SWEEPS.glob("*.yaml")):
        results = SWEEPS / "results" / path.stem
        report = f"[`results/{path.stem}/`](sweeps/results/{path.stem}/)" if results.is_dir() \
            else ""
        rows.append(f"| [`{path.stem}`](sweeps/{path.name}) | `{sweeper_of(path)}` | "
                    f"{_cell(question(path))} | {report} |")
    return "\n".join(rows)


def _model_files() -> dict[str, list[str]]:
    """workload name -> the conf/model options that select it (name: NAME, or a defaults alias)."""
    own: dict[str, str] = {}
    alias: dict[str, str] = {}
    for path in sorted((CONF / "model").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if data.get("name"):
            own[path.stem] = data["name"]
        else:                                          # e.g. model=dlrm: defaults [dlrm_dcnv2]
            alias[path.stem] = next(e for e in data.get("defaults", [])
                                    if isinstance(e, str) and e != "_self_")

    def resolve(option: str) -> str:
        return own[option] if option in own else resolve(alias[option])

    names = {option: resolve(option) for option in [*own, *alias]}
    by_workload: dict[str, list[str]] = {}
    for option, workload in names.items():
        by_workload.setdefault(workload, []).append(option)
    return by_workload


def _default_dataset(model_file: Path) -> str:
    data = yaml.safe_load(model_file.read_text()) or {}
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            if "/dataset" in key:
                return str(value)
    return defaults().get("dataset", "")


def workloads_table() -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from pinchpoint.workloads import registry

    options = _model_files()
    rows = ["| `model=` | workload (first line of `conf/model/NAME.yaml`) | default `dataset=` | "
            "code |", "|---|---|---|---|"]
    for name in registry.workload_names():
        spec = registry.spec(name)
        model_file = CONF / "model" / f"{name}.yaml"
        package = spec.workload.split(":")[0].rsplit(".", 1)[0]
        folder = "src/" + package.replace(".", "/") + "/"
        chosen = ", ".join(f"`{o}`" for o in sorted(options.get(name, [name]),
                                                    key=lambda o: (o != name, o)))
        rows.append(f"| {chosen} | {_cell(first_sentence(leading_comment(model_file)))} | "
                    f"`{_default_dataset(model_file)}` | [`{folder[len('src/pinchpoint/'):]}`]"
                    f"({folder}) |")
    return "\n".join(rows)


def _inline(names: list[str], sep: str = ", ") -> str:
    return sep.join(f"`{n}`" for n in names)


def _stems(folder: Path, pattern: str) -> list[str]:
    return [p.stem for p in sorted(folder.glob(pattern))]


def optuna_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"(optuna[^"]*)"', text)
    return f"`{pin.group(1)}`" if pin else "`optuna`"


RENDERERS = {
    "config-groups": config_groups_table,
    "sweeps": sweeps_table,
    "workloads": workloads_table,
    "parallel-presets": lambda: _inline(_stems(CONF / "parallel", "*.yaml")),
    "gpu-presets": lambda: "`+gpu=" + "|".join(_stems(CONF / "gpu", "*.yaml")) + "`",
    "benchmarks": lambda: _inline(_stems(ROOT / "benchmarks", "*.py")),
    "optuna-pin": optuna_pin,
}


# -- README.md ----------------------------------------------------------------------------------

def render(text: str) -> str:
    """README text with every generated block re-rendered (a table keeps its own lines)."""
    cache: dict[str, str] = {}

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"README.md: unknown generated block {name!r} "
                           f"(known: {', '.join(RENDERERS)})")
        body = cache.setdefault(name, RENDERERS[name]())
        if m.group("body").startswith("\n"):
            body = f"\n{body}\n"
        return f"{m.group(1)}{body}{m.group(4)}"

    return BLOCK.sub(fill, text)


def stale(text: str) -> list[str]:
    """Names of the generated blocks whose body differs from what render() gives."""
    fresh = {m.start(): m for m in BLOCK.finditer(render(text))}
    names = []
    for old, new in zip(BLOCK.finditer(text), fresh.values()):
        if old.group("body") != new.group("body"):
            names.append(old.group("name"))
    return names


def main(argv: list[str]) -> int:
    text = README.read_text()
    if "--check" in argv:
        names = stale(text)
        if names:
            print(f"README.md is out of date in: {', '.join(names)}; run {COMMAND}")
            return 1
        print("README.md's generated blocks are up to date")
        return 0
    new = render(text)
    if new != text:
        README.write_text(new)
        print(f"README.md: rewrote {', '.join(stale(text)) or 'nothing'}")
    else:
        print("README.md: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
