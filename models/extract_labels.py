#!/usr/bin/env python3
"""Write a list of class names, one per line (UTF-8, '\\n'), from a Python source file.

The list is read as text: the file is parsed with `ast` and the named module-level assignment
must be a literal list of strings (`ast.literal_eval`), so nothing in the file is executed and
the package it comes from (e.g. torchvision) is never imported.

Usage: extract_labels.py --source _meta.py --variable _KINETICS400_CATEGORIES --count 400 --out labels.txt
"""

import argparse
import ast
import sys


def read_list(source_path, variable):
    with open(source_path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=source_path)
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == variable):
            labels = ast.literal_eval(stmt.value)
            if not (isinstance(labels, list) and all(isinstance(s, str) for s in labels)):
                raise ValueError(f"{source_path}: {variable} is not a list of strings")
            return labels
    raise ValueError(f"{source_path}: no module-level assignment to {variable}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="Python file holding the list")
    parser.add_argument("--variable", required=True, help="name of the module-level list")
    parser.add_argument("--count", type=int, required=True, help="expected number of labels")
    parser.add_argument("--out", required=True, help="output text file")
    args = parser.parse_args()

    labels = read_list(args.source, args.variable)
    if len(labels) != args.count:
        sys.exit(f"extract_labels: {args.variable} has {len(labels)} entries, expected {args.count}")
    bad = [s for s in labels if not s or s != s.strip() or "\n" in s]
    if bad:
        sys.exit(f"extract_labels: labels unusable as lines: {bad!r}")
    if len(set(labels)) != len(labels):
        sys.exit(f"extract_labels: {args.variable} has duplicate labels")
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(label + "\n" for label in labels))
    print(f"extract_labels: wrote {len(labels)} labels to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
