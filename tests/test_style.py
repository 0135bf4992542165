"""House rules that a reviewer would otherwise check by hand."""

import ast
from pathlib import Path


def test_no_function_in_the_package_is_over_60_lines(repo_root):
    long = []
    for path in sorted(Path(repo_root, "cbsflow").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(repo_root)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, "split these functions (the house limit is 60 lines): " + "; ".join(long)
