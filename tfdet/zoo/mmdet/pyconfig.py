"""Reading an mmdetection config text (a checkpoint's meta["config"] / meta["cfg"]: Python source of
`name = dict(...)` assignments, as mmcv / mmengine `Config.pretty_text` writes it) without executing it.

Only literals are evaluated: numbers, strings, True / False / None, lists, tuples, {...} dicts, dict(...)
/ list(...) / tuple(...) calls of those, unary +/- and arithmetic on numbers. A top-level assignment whose
value is anything else (a name, another call, an attribute) is recorded as UNREADABLE; other statements
(imports, `_base_`, ...) are ignored."""

import ast
import operator

UNREADABLE = object()  # the value of an assignment that is not a literal

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}
_CALLS = {"dict": dict, "list": list, "tuple": tuple}


class NotLiteral(ValueError):
    """A node that is not a literal (what the module docstring allows)."""


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotLiteral(f"arithmetic on {value!r}")
    return value


def literal(node):
    """The value of an expression node made of literals (module docstring); NotLiteral otherwise."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [literal(n) for n in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise NotLiteral("** in a dict")
        return {literal(k): literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name) and node.id in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number(literal(node.operand))
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _number(literal(node.left)), _number(literal(node.right))
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise NotLiteral("a large power")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
        if any(kw.arg is None for kw in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
            raise NotLiteral("* / ** arguments")
        args = [literal(a) for a in node.args]
        kwargs = {kw.arg: literal(kw.value) for kw in node.keywords}
        if node.func.id == "dict":
            if len(args) > 1:
                raise NotLiteral("dict() with several positional arguments")
            return dict(*args, **kwargs)
        if kwargs or len(args) > 1:
            raise NotLiteral(f"{node.func.id}() with keyword or several arguments")
        return _CALLS[node.func.id](*args)
    raise NotLiteral(f"{type(node).__name__} at line {getattr(node, 'lineno', '?')}")


def parse_config(text):
    """{name: value} of the top-level `name = <literal>` assignments of a config text; values that are not
    literals are UNREADABLE. A text that is not Python is a ValueError."""
    try:
        tree = ast.parse(text)
    except SyntaxError as err:
        raise ValueError(f"the checkpoint's config text is not Python ({err.msg}, line {err.lineno}).") from None
    out = {}
    for statement in tree.body:
        if not isinstance(statement, ast.Assign):
            continue
        try:
            value = literal(statement.value)
        except (NotLiteral, TypeError, ArithmeticError, RecursionError):  # TypeError: e.g. a list as a dict key
            value = UNREADABLE
        for target in statement.targets:
            if isinstance(target, ast.Name):
                out[target.id] = value
    return out
