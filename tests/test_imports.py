"""No import cycles between the project's modules, nor between its packages (an AST scan of every import,
module-level and deferred alike, with ``models/`` and ``preprocessing/`` read as ``dmtl.models`` and
``dmtl.preprocessing``, as they install)."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"dmtl": REPO / "dmtl", "dmtl.models": REPO / "models", "dmtl.preprocessing": REPO / "preprocessing"}


def modules() -> dict:
    out = {}
    for package, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue  # entry scripts (python -m ...): nothing imports them
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports(name: str, path: Path, known) -> set:
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith(("models", "preprocessing")):
                raise AssertionError(f"{path}: imports the top-level {target!r}; use dmtl.{target}")
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycle(graph: dict):
    """A cycle of ``graph`` as a list of nodes, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def package_of(name: str) -> str:
    """``dmtl.training.run`` -> ``dmtl.training``; top-level modules of dmtl stay themselves."""
    return ".".join(name.split(".")[:2])


def test_no_module_import_cycle():
    # a package's __init__ re-exporting its own modules is not a cycle between modules
    g = {n: {m for m in deps if not (n.startswith(m + ".") or m.startswith(n + "."))} for n, deps in graph().items()}
    assert cycle(g) is None, " -> ".join(cycle(g))


def test_no_package_import_cycle():
    g = {}
    for name, deps in graph().items():
        g.setdefault(package_of(name), set()).update(package_of(d) for d in deps if package_of(d) != package_of(name))
    assert cycle(g) is None, " -> ".join(cycle(g))


def test_scan_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def _interpreters():
    """Other CPython versions the package supports (3.10-3.13) found on this machine (pyenv or PATH)."""
    import glob
    import shutil
    import subprocess
    found = {}
    for minor in (10, 12, 13):
        candidates = [*sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"3.{minor}.*" / "bin" / "python"))),
                      shutil.which(f"python3.{minor}")]
        for candidate in candidates:
            if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
                found[minor] = candidate
                break
    return found


def test_source_compiles_on_every_supported_python(tmp_path):
    """Syntax of every module on Python 3.10-3.13 (those installed here; the suite itself runs on the machine's
    Python). Compiled into a temporary folder, never beside the sources."""
    import subprocess

    import pytest
    interpreters = _interpreters()
    if not interpreters:
        pytest.skip("no other Python 3.10-3.13 interpreter on this machine")
    files = [str(p) for root in ROOTS.values() for p in root.rglob("*.py")]
    script = ("import py_compile, sys\n"
              "for i, f in enumerate(sys.argv[2:]):\n"
              "    py_compile.compile(f, cfile=f'{sys.argv[1]}/{i}.pyc', doraise=True)\n")
    for minor, python in interpreters.items():
        done = subprocess.run([python, "-c", script, str(tmp_path), *files], capture_output=True, text=True)
        assert done.returncode == 0, f"Python 3.{minor}: {done.stderr[-2000:]}"
