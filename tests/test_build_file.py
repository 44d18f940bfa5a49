"""The top-level Bazel BUILD file stays in step with the tree (no Bazel needed: runs in well under a second).

BUILD is read by a small evaluator of the BUILD-language subset it uses: it is executed with our own
`py_library`, `py_test`, `glob`, ... that record each target, and `glob` walks the tree by Bazel's rules
(`*` within one path segment, `**` across any number of them). The checks then look at the tree as it is
when the test runs, so a module, sub-package or test file added later fails here until BUILD covers it:

  * every vsep_tf/**/*.py, tools/**/*.py and tests/ helper (conftest.py, ...) is in exactly one py_library;
  * every tests/test_*.py has a py_test that runs it, with a size; tfio / slow tests carry their tags;
  * every first-party import (vsep_tf.*, tools.*, tests/ helpers; top-level or inside a function, absolute or
    relative) of a target's sources is reachable through its deps, the dependency graph has no cycle, and
    every label points at a target or file that exists;
  * BUILD keeps to what Bazel's BUILD dialect of Starlark allows (no def / if / for statements, f-strings...).

`tools/bazel_check.sh` is the complement: it runs the real Bazel (`bazel query //...`, then `bazel test`).
Under `bazel test` this file is reached through a runfiles symlink; it resolves it and checks the source tree.
"""
from __future__ import annotations

import ast
import builtins
import configparser
import os
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_PATH = REPO / "BUILD"
PACKAGE = "vsep_tf"
SIZES = ("small", "medium", "large", "enormous")
STARLARK_BUILTINS = ("all", "any", "bool", "dict", "enumerate", "int", "len", "list", "max", "min", "range",
                     "reversed", "sorted", "str", "tuple", "zip")


# ---------------------------------------------------------------------------------------------------------------
# A reader of the BUILD-language subset used by BUILD.


def _glob_regex(pattern: str) -> re.Pattern:
  """Bazel glob pattern -> regex over '/'-separated paths relative to the package (here the repo root)."""
  if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
    raise ValueError(f"glob pattern {pattern!r}: not a relative path")
  parts = []
  segments = pattern.split("/")
  for i, segment in enumerate(segments):
    last = i == len(segments) - 1
    if segment == "**":
      parts.append(".*" if last else "(?:[^/]+/)*")  # zero or more whole segments
      continue
    if "**" in segment:
      raise ValueError(f"glob pattern {pattern!r}: '**' must be a whole path segment")
    regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment)
    parts.append(regex if last else regex + "/")
  return re.compile("".join(parts) + r"\Z")


def _package_files(root: Path) -> list[str]:
  """Files of the root package, as Bazel sees them: sub-packages (dirs with a BUILD file) and Bazel's
  convenience symlinks (bazel-*) are not part of it, and directory symlinks are not followed."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    keep = []
    for d in dirnames:
      sub = os.path.join(dirpath, d)
      if rel_dir == "." and (d.startswith("bazel-") or d == ".git"):
        continue
      if os.path.islink(sub) or any(os.path.exists(os.path.join(sub, b)) for b in ("BUILD", "BUILD.bazel")):
        continue
      keep.append(d)
    dirnames[:] = sorted(keep)
    for f in filenames:
      found.append(f if rel_dir == "." else f"{rel_dir}/{f}".replace(os.sep, "/"))
  return sorted(found)


class Target:

  def __init__(self, kind: str, attrs: dict):
    self.kind = kind
    self.name = attrs["name"]
    self.attrs = attrs

  def labels(self, attr: str) -> list[str]:
    return list(self.attrs.get(attr) or [])

  def __repr__(self):
    return f"{self.kind}(name={self.name!r})"


class BuildFile:
  """The targets that BUILD declares, read by executing it with recording rule functions."""

  RULES = ("py_library", "py_test", "py_binary", "filegroup", "genrule", "test_suite", "sh_test", "sh_binary")

  def __init__(self, path: Path):
    self.path = path
    self.root = path.parent
    self.targets: dict[str, Target] = {}
    self.errors: list[str] = []
    self._files = None
    text = path.read_text(encoding="utf-8")
    self.tree = ast.parse(text, filename=str(path))
    # Only Starlark's built-in functions: a BUILD that leans on any other Python builtin fails here.
    env = {"__builtins__": {k: getattr(builtins, k) for k in STARLARK_BUILTINS}}
    env.update(glob=self.glob, package=self._package, exports_files=self._noop, licenses=self._noop,
               load=self._load, select=self._select)
    for kind in self.RULES:
      env[kind] = self._rule(kind)
    exec(compile(self.tree, str(path), "exec"), env)  # pylint: disable=exec-used

  # -- functions visible to BUILD
  def glob(self, include, exclude=(), exclude_directories=1, allow_empty=True):
    del exclude_directories, allow_empty  # only files are listed; an empty glob is Bazel 4's default
    if self._files is None:
      self._files = _package_files(self.root)
    inc = [_glob_regex(p) for p in include]
    exc = [_glob_regex(p) for p in exclude]
    return [f for f in self._files if any(r.match(f) for r in inc) and not any(r.match(f) for r in exc)]

  def _rule(self, kind):

    def rule(**attrs):
      name = attrs.get("name")
      if not isinstance(name, str) or not name:
        self.errors.append(f"{kind} without a name: {attrs}")
        return
      if name in self.targets:
        self.errors.append(f"target name {name!r} declared twice ({self.targets[name].kind} and {kind})")
      self.targets[name] = Target(kind, attrs)

    return rule

  @staticmethod
  def _noop(*args, **kwargs):
    del args, kwargs

  @staticmethod
  def _package(**kwargs):
    del kwargs

  @staticmethod
  def _load(*args, **kwargs):
    raise NotImplementedError(f"load{args}: BUILD is meant to use only Bazel's native rules (no external repos)")

  @staticmethod
  def _select(*args, **kwargs):
    raise NotImplementedError("select(): not used by this BUILD; extend tests/test_build_file.py if it must be")

  # -- queries
  def of_kind(self, *kinds) -> list[Target]:
    return [t for t in self.targets.values() if t.kind in kinds]

  def generated_files(self) -> set[str]:
    return {out for t in self.of_kind("genrule") for out in t.labels("outs")}

  def resolve(self, label: str) -> tuple[str, str]:
    """A label of this package -> ('target', name) or ('file', relative path); anything else raises."""
    if label.startswith("@") or (label.startswith("//") and not label.startswith("//:")):
      raise ValueError(f"label {label!r} is outside this one-package workspace")
    name = label[3:] if label.startswith("//:") else label[1:] if label.startswith(":") else label
    if name in self.targets:
      return "target", name
    return "file", name

  def deps_closure(self, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
      n = todo.pop()
      if n in seen or n not in self.targets:
        continue
      seen.add(n)
      for dep in self.targets[n].labels("deps"):
        kind, dep_name = self.resolve(dep)
        if kind == "target":
          todo.append(dep_name)
    return seen


@pytest.fixture(scope="module")
def build() -> BuildFile:
  assert BUILD_PATH.is_file(), f"{BUILD_PATH} is missing"
  b = BuildFile(BUILD_PATH)
  assert not b.errors, "\n".join(b.errors)
  return b


# ---------------------------------------------------------------------------------------------------------------
# The tree and its imports.


def _rel(path: Path) -> str:
  return path.relative_to(REPO).as_posix()


def _tree_py(top: str) -> list[str]:
  base = REPO / top
  return sorted(_rel(p) for p in base.rglob("*.py") if "__pycache__" not in p.parts) if base.is_dir() else []


def _test_files() -> list[str]:
  return sorted(_rel(p) for p in (REPO / "tests").glob("test_*.py"))


def _test_helpers() -> list[str]:
  return sorted(_rel(p) for p in (REPO / "tests").glob("*.py") if not p.name.startswith("test_"))


def _module_file(module: str, root: Path = REPO) -> str | None:
  """'vsep_tf.priors.base' -> 'vsep_tf/priors/base.py' (or the package's __init__.py); tests/ helpers are
  top-level modules (pytest puts tests/ on sys.path). None when it is not a file of this repo."""
  parts = module.split(".")
  bases = [root] + ([root / "tests"] if len(parts) == 1 else [])
  for base in bases:
    path = base.joinpath(*parts)
    for candidate in (path.with_name(path.name + ".py"), path / "__init__.py"):
      if candidate.is_file():
        return candidate.relative_to(root).as_posix()
  return None


def _first_party_imports(src: str, root: Path = REPO) -> dict[str, int]:
  """Files of this repo that importing `src` loads: {file: line of the import}. Includes imports inside
  functions, `from pkg import module`, relative imports and the __init__.py of every enclosing package."""
  path = root / src
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  package = src[:-3].split("/")[:-1]  # a module's package; for an __init__.py, the package itself
  if package[:1] == ["tests"]:  # tests/ is not a package: its modules are top-level (pytest's prepend mode)
    package = []
  modules: dict[str, int] = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        modules.setdefault(alias.name, node.lineno)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package[:len(package) - node.level + 1] if node.level <= len(package) else []
        prefix = ".".join(base + ([node.module] if node.module else []))
      else:
        prefix = node.module or ""
      if not prefix:
        continue
      for alias in node.names:  # `from vsep_tf import priors` imports the sub-package vsep_tf.priors
        sub = f"{prefix}.{alias.name}"
        modules.setdefault(sub if _module_file(sub, root) else prefix, node.lineno)
  files: dict[str, int] = {}
  for module, line in modules.items():
    pieces = module.split(".")
    for i in range(1, len(pieces) + 1):  # the module and every enclosing package's __init__.py
      f = _module_file(".".join(pieces[:i]), root)
      if f and f != src:
        files.setdefault(f, line)
  return files


def _marks_and_imports(src: str) -> tuple[set[str], set[str]]:
  """The pytest marks a test file uses (`pytest.mark.X` anywhere: decorators, pytestmark, pytest.param) and
  the top-level names of the modules it imports."""
  tree = ast.parse((REPO / src).read_text(encoding="utf-8"))
  marks, imports = set(), set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
      marks.add(node.attr)
    elif isinstance(node, ast.Import):
      imports.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      imports.add(node.module.split(".")[0])
  return marks, imports


def _owners(build: BuildFile) -> dict[str, list[str]]:
  owners: dict[str, list[str]] = {}
  for t in build.of_kind("py_library"):
    for src in t.labels("srcs"):
      kind, name = build.resolve(src)
      if kind == "file":
        owners.setdefault(name, []).append(t.name)
  return owners


# ---------------------------------------------------------------------------------------------------------------
# The checks.


def test_build_keeps_to_the_build_dialect():
  """Executing BUILD as Python would accept constructs Bazel rejects: keep them out."""
  tree = ast.parse(BUILD_PATH.read_text(encoding="utf-8"))
  banned = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.If, ast.For, ast.While,
            ast.Try, ast.With, ast.Import, ast.ImportFrom, ast.JoinedStr, ast.Global, ast.Nonlocal, ast.Delete,
            ast.Raise, ast.Assert, ast.Set, ast.SetComp, ast.GeneratorExp, ast.Yield, ast.Await, ast.Starred,
            ast.NamedExpr)
  problems = [f"BUILD:{n.lineno}: {type(n).__name__} is not allowed in a BUILD file"
              for n in ast.walk(tree) if isinstance(n, banned)]
  problems += [f"BUILD:{n.lineno}: `is` comparison is not Starlark" for n in ast.walk(tree)
               if isinstance(n, ast.Compare) and any(isinstance(o, (ast.Is, ast.IsNot)) for o in n.ops)]
  assert not problems, "\n".join(problems)


def test_every_module_is_in_exactly_one_py_library(build):
  owners = _owners(build)
  modules = _tree_py(PACKAGE) + _tree_py("tools") + _test_helpers()
  assert any(m.startswith(PACKAGE + "/") for m in modules), f"no {PACKAGE}/**/*.py found under {REPO}"
  problems = []
  for m in modules:
    libs = owners.get(m, [])
    if not libs:
      problems.append(f"{m}: in no py_library's srcs (add it, or a glob covering its directory, to BUILD)")
    elif len(libs) > 1:
      problems.append(f"{m}: in several py_library targets {sorted(libs)}; keep it in one")
  assert not problems, "\n".join(problems)


def test_every_test_file_has_a_py_test(build):
  tests = _test_files()
  assert tests, f"no tests/test_*.py under {REPO}"
  runs: dict[str, list[Target]] = {}
  for t in build.of_kind("py_test"):
    for arg in _args(t):
      if arg.startswith("tests/") and arg.endswith(".py"):
        runs.setdefault(arg, []).append(t)
  problems = []
  for f in tests:
    targets = runs.get(f, [])
    if not targets:
      problems.append(f"{f}: no py_test runs it (add one named {Path(f).stem!r}, like the others in BUILD)")
    for t in targets:
      if f not in [build.resolve(s)[1] for s in t.labels("srcs")]:
        problems.append(f"{f}: py_test {t.name!r} runs it but does not list it in srcs")
  for f in runs:
    if f not in tests:
      problems.append(f"{f}: py_test {[t.name for t in runs[f]]} run a test file that does not exist")
  assert not problems, "\n".join(problems)


def _ini_markexpr() -> str:
  """The `-m` expression of pytest.ini's addopts (the selection of a plain `python -m pytest`), or ''."""
  ini = configparser.ConfigParser()
  ini.read(REPO / "pytest.ini")
  opts = shlex.split(ini.get("pytest", "addopts", fallback=""))
  return next((opts[i + 1] for i in range(len(opts) - 2, -1, -1) if opts[i] == "-m"), "")


def _args(t: Target) -> list[str]:
  """A test's command-line arguments: Bazel splits each element of `args` like a Bourne shell does."""
  return [token for arg in t.labels("args") for token in shlex.split(arg)]


def _markexpr(t: Target) -> str:
  """The marker expression a py_test runs: the last `-m` of its args (pytest: the last one wins), else
  pytest.ini's."""
  args = _args(t)
  return next((args[i + 1] for i in range(len(args) - 2, -1, -1) if args[i] == "-m"), _ini_markexpr())


def _selects(expr: str, marks: set[str]) -> bool:
  """Whether pytest's `-m expr` selects a test carrying exactly `marks` (expr: names, and, or, not, ())."""
  if not expr.strip():
    return True
  assert re.fullmatch(r"[\w\s()]*", expr), f"marker expression {expr!r}: only names, and/or/not, ()"
  names = set(re.findall(r"\w+", expr)) - {"and", "or", "not"}
  return bool(eval(expr, {"__builtins__": {}}, {n: n in marks for n in names}))  # pylint: disable=eval-used


def test_py_tests_have_a_size_and_their_tags(build):
  """Sizes; and the marks of pytest.ini (slow, tfio) map onto targets and tags:
  a file with @pytest.mark.slow tests has a `<name>_slow` target (size large, tags manual + slow) selecting
  them, every other target deselects them (as plain pytest does); a file with tfio tests has a target tagged
  'tfio' selecting them, and its targets without that tag deselect them (so --test_tag_filters=-tfio / tfio
  split the tensorflow-io tests off exactly)."""
  problems = []
  for t in build.of_kind("py_test"):
    if t.attrs.get("size") not in SIZES:
      problems.append(f"py_test {t.name!r}: size must be one of {SIZES}, not {t.attrs.get('size')!r}")
    if not set(t.labels("tags")) <= {"manual", "tfio", "slow", "exclusive", "external", "local", "no-sandbox"}:
      problems.append(f"py_test {t.name!r}: unexpected tags {t.labels('tags')}")
  for f in _test_files():
    marks, imports = _marks_and_imports(f)
    targets = [t for t in build.of_kind("py_test") if f in _args(t)]
    for t in targets:
      expr, tags = _markexpr(t), set(t.labels("tags"))
      if "slow" in tags:
        if t.attrs.get("size") != "large" or "manual" not in tags or not _selects(expr, {"slow"}):
          problems.append(f"py_test {t.name!r}: a slow target has size 'large', tags ['manual', 'slow'] and "
                          f"selects the slow tests (args [..., '-m', 'slow'])")
      elif _selects(expr, {"slow"}) and "slow" in marks:
        problems.append(f"py_test {t.name!r}: runs {f}'s slow tests: deselect them ('-m', 'not slow ...')")
      if "tensorflow_io" in imports and "tfio" not in tags:
        problems.append(f"py_test {t.name!r}: {f} imports tensorflow_io: tag it 'tfio'")
      if "tfio" in marks and "tfio" not in tags and _selects(expr, {"tfio"}):
        problems.append(f"py_test {t.name!r}: runs {f}'s tfio tests: deselect them (args [..., '-m', "
                        f"\"'not slow and not tfio'\"]) and run them from a target tagged 'tfio'")
    if "slow" in marks and not any("slow" in t.labels("tags") for t in targets):
      problems.append(f"{f} has @pytest.mark.slow tests: add a py_test {Path(f).stem + '_slow'!r} running it "
                      f"with args [..., '-m', 'slow'], size 'large', tags ['manual', 'slow']")
    if "tfio" in marks and not any("tfio" in t.labels("tags") and _selects(_markexpr(t), {"tfio"})
                                   for t in targets):
      problems.append(f"{f} has tfio tests: add a py_test {Path(f).stem + '_tfio'!r} tagged 'tfio' running it "
                      f"with args [..., '-m', \"'tfio and not slow'\"]")
  assert not problems, "\n".join(problems)


def test_marker_expressions():
  assert _selects("not slow", set()) and not _selects("not slow", {"slow"})
  assert _selects("tfio and not slow", {"tfio"}) and not _selects("tfio and not slow", {"tfio", "slow"})
  assert not _selects("not slow and not tfio", {"tfio"}) and _selects("(slow or tfio)", {"tfio"})
  assert _selects("", {"anything"})
  quoted = Target("py_test", {"name": "t", "args": ["tests/test_t.py", "-m", "'tfio and not slow'"]})
  assert _args(quoted) == ["tests/test_t.py", "-m", "tfio and not slow"]  # Bazel's shell tokenization
  assert _markexpr(quoted) == "tfio and not slow"


def test_labels_point_at_targets_or_files(build):
  files = set(_package_files(REPO)) | build.generated_files()
  problems = []
  for t in build.targets.values():
    for attr in ("srcs", "deps", "data", "tests"):
      for label in t.labels(attr):
        try:
          kind, name = build.resolve(label)
        except ValueError as e:
          problems.append(f"{t!r}.{attr}: {e}")
          continue
        if attr in ("deps", "tests") and kind != "target":
          problems.append(f"{t!r}.{attr}: {label!r} is not a target of BUILD")
        elif kind == "file" and name not in files:
          problems.append(f"{t!r}.{attr}: {label!r} does not exist (stale entry?)")
    if t.kind in ("py_test", "py_binary"):
      main = t.attrs.get("main") or f"{t.name}.py"
      if main not in [build.resolve(s)[1] for s in t.labels("srcs")]:
        problems.append(f"{t!r}: main {main!r} is not in its srcs")
  assert not problems, "\n".join(problems)


def test_deps_have_no_cycle(build):
  state: dict[str, int] = {}  # 1 = on the current path, 2 = done
  cycles = []

  def visit(name, path):
    state[name] = 1
    for dep in build.targets[name].labels("deps"):
      kind, d = build.resolve(dep)
      if kind != "target":
        continue
      if state.get(d) == 1:
        cycles.append(" -> ".join(path[path.index(d):] + [d]) if d in path else f"{name} -> {d}")
      elif d not in state:
        visit(d, path + [d])
    state[name] = 2

  for name in build.targets:
    if name not in state:
      visit(name, [name])
  assert not cycles, "dependency cycles (Bazel refuses to build them):\n" + "\n".join(cycles)


def test_first_party_imports_are_in_deps(build):
  owners = _owners(build)
  conftests = [h for h in _test_helpers() if h.endswith("conftest.py")]
  problems = []
  for t in build.of_kind("py_library", "py_test", "py_binary"):
    closure = build.deps_closure(t.name)
    needed: dict[str, tuple[str, int]] = {}
    for src in t.labels("srcs"):
      kind, name = build.resolve(src)
      if kind == "file" and name.endswith(".py") and (REPO / name).is_file():
        for f, line in _first_party_imports(name).items():
          needed.setdefault(f, (name, line))
    if t.kind == "py_test":  # pytest loads tests/conftest.py before the test file
      for c in conftests:
        needed.setdefault(c, ("pytest", 0))
    missing: dict[str, list[str]] = {}
    for f, (src, line) in sorted(needed.items()):
      libs = owners.get(f, [])
      if not libs:
        continue  # reported by test_every_module_is_in_exactly_one_py_library
      where = f"{src}:{line}" if line else "pytest loads it"
      if not set(libs) & closure and where not in missing.get(libs[0], []):
        missing.setdefault(libs[0], []).append(where)
    for lib, where in sorted(missing.items()):
      problems.append(f"{t!r}: add \":{lib}\" to its deps (imported at {', '.join(where)})")
  assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# The reader itself (so that a bug in it cannot make the checks above pass vacuously).


def test_glob_follows_bazel_semantics(tmp_path):
  for f in ("BUILD", "a.py", "pkg/__init__.py", "pkg/m.py", "pkg/sub/deep.py", "pkg/sub/x.txt", "other/BUILD",
            "other/hidden.py", "bazel-out/junk.py"):
    (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / f).write_text("")
  (tmp_path / "BUILD").write_text('py_library(name = "all", srcs = glob(["**/*.py"], exclude = ["a.py"]))\n'
                                  'py_library(name = "top", srcs = glob(["pkg/*.py"]))\n'
                                  'py_library(name = "one", srcs = glob(["pkg/?.py", "pkg/sub/**"]))\n')
  b = BuildFile(tmp_path / "BUILD")
  assert b.targets["all"].labels("srcs") == ["pkg/__init__.py", "pkg/m.py", "pkg/sub/deep.py"]
  assert b.targets["top"].labels("srcs") == ["pkg/__init__.py", "pkg/m.py"]
  assert b.targets["one"].labels("srcs") == ["pkg/m.py", "pkg/sub/deep.py", "pkg/sub/x.txt"]


def test_import_scan_sees_every_form(tmp_path):
  files = {
      "pkg/__init__.py": "",
      "pkg/a.py": "",
      "pkg/sub/__init__.py": "",
      "pkg/sub/b.py": "",
      "pkg/sub/c.py": "",
      "pkg/sub/d.py": "",
      "pkg/e.py": "",
      "tests/helper.py": "",
      "pkg/sub/user.py": ("import os\nimport pkg.a\nfrom pkg.sub import b\nfrom . import c\nfrom .d import X\n"
                          "def f():\n  from ..e import Y\n  import numpy\n"),
      "tests/test_x.py": "from pkg import sub\nimport helper\n",
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  assert _first_party_imports("pkg/sub/user.py", tmp_path) == {
      "pkg/__init__.py": 2, "pkg/a.py": 2, "pkg/sub/__init__.py": 3, "pkg/sub/b.py": 3, "pkg/sub/c.py": 4,
      "pkg/sub/d.py": 5, "pkg/e.py": 7}
  assert _first_party_imports("tests/test_x.py", tmp_path) == {
      "pkg/__init__.py": 1, "pkg/sub/__init__.py": 1, "tests/helper.py": 2}


# ---------------------------------------------------------------------------------------------------------------
# The layering (vsep_tf has no import cycle, so BUILD needs no merged library).

# Each layer's own library, and the libraries it must NOT reach through its deps (a dependency on a higher layer).
LAYERS = {
    "config": ("vsep_tf/config.py", ("registry", "separators", "priors", "data", "training", "run_flags")),
    "separators": ("vsep_tf/separators/masks.py", ("training", "model_dir", "registry", "run_flags", "config")),
    "data": ("vsep_tf/data/solo.py", ("separators", "priors", "training", "registry")),
    "registry": ("vsep_tf/registry.py", ("training", "model_dir", "run_flags")),
    "model_dir": ("vsep_tf/model_dir.py", ("training", "run_flags")),
    "run_flags": ("vsep_tf/run_flags.py", ("training", "model_dir")),
    "training": ("vsep_tf/training/pipeline.py", ("run_flags", "research", "evaluate", "export")),
    "research": ("vsep_tf/research/sleep_trainer.py", ("run_flags",)),
}


def test_layers_are_libraries_of_their_own(build):
  owners = _owners(build)
  problems = []
  for lib, (module, above) in LAYERS.items():
    if lib not in build.targets:
      problems.append(f"no py_library {lib!r}")
      continue
    if (REPO / module).is_file() and owners.get(module) != [lib]:
      problems.append(f"{module}: expected in py_library {lib!r}, is in {owners.get(module)}")
    reached = build.deps_closure(lib) & set(above)
    if reached:
      problems.append(f"py_library {lib!r} depends on the higher layer(s) {sorted(reached)}")
  for gone in ("vsep_tf/training/config.py", "vsep_tf/training/builders.py"):
    assert not (REPO / gone).exists(), f"{gone} is back: BUILD's layering assumes it is gone"
  assert "vsep_tf/training/nmf_trainer.py" in build.targets["training"].labels("srcs")
  assert not any(s.startswith("vsep_tf/separators/") for s in build.targets["training"].labels("srcs"))
  assert not problems, "\n".join(problems)
