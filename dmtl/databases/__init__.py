"""Database adapters: one module per database, looked up by name and imported only when used.

Adding a database is one module with ``load(root, **options) -> AnnotationTable`` and one line in
:data:`REGISTRY`. The paper's expression + AU pairs (:data:`PAIRS`) load both databases and merge them: class names
of the expression database, attribute names of EmotioNet.
"""
from __future__ import annotations

import importlib
import logging

from dmtl.databases.base import AnnotationTable, merge_tables

REGISTRY = {
    "abaw4lsd": "dmtl.databases.abaw4_lsd",
    "affectnet": "dmtl.databases.affectnet",
    "affwild2": "dmtl.databases.affwild2",
    "cad": "dmtl.databases.cad",
    "celeba": "dmtl.databases.celeba",
    "ckplus": "dmtl.databases.ckplus",
    "csv": "dmtl.databases.generic_csv",
    "cub": "dmtl.databases.cub",
    "demo": "dmtl.databases.demo",
    "emotionet": "dmtl.databases.emotionet",
    "jaffe": "dmtl.databases.jaffe",
    "rafdb": "dmtl.databases.rafdb",
    "sadd": "dmtl.databases.sadd",
}

PAIRS = {
    "affectnet-emotionet": ("affectnet", "emotionet"),
    "rafdb-emotionet": ("rafdb", "emotionet"),
    "abaw4lsd-emotionet": ("abaw4lsd", "emotionet"),
}


def available() -> list[str]:
    """Names accepted by :func:`load_database`: single databases and pairs."""
    return sorted([*REGISTRY, *PAIRS])


def _pair_roots(name: str, root) -> dict:
    members = PAIRS[name]
    if isinstance(root, str) and "=" in root:
        root = dict(part.split("=", 1) for part in root.split(",") if part.strip())
        root = {k.strip(): v.strip() for k, v in root.items()}
    if not isinstance(root, dict) or set(root) != set(members):
        raise ValueError(f"database pair {name!r} needs one root per database, e.g. "
                         f"{{'{members[0]}': DIR1, '{members[1]}': DIR2}} or "
                         f"'{members[0]}=DIR1,{members[1]}=DIR2'; got {root!r}")
    return root


def load_database(name: str, root, **options) -> AnnotationTable:
    """Loads database ``name`` from ``root``; for a pair, ``root`` maps each member to its folder.

    For a pair, an option ``member.key`` goes to that member only, a plain ``key`` to both.
    """
    if name in PAIRS:
        roots = _pair_roots(name, root)
        unknown = [k for k in options if "." in k and k.split(".", 1)[0] not in PAIRS[name]]
        if unknown:
            raise ValueError(f"options {unknown} name no member of {PAIRS[name]}")
        tables = []
        for member in PAIRS[name]:
            own = {k: v for k, v in options.items() if "." not in k}
            own.update({k.split(".", 1)[1]: v for k, v in options.items() if k.startswith(f"{member}.")})
            tables.append(load_database(member, roots[member], **own))
        expressions, emotionet = tables
        return merge_tables(tables, name, class_names=expressions.schema.class_names,
                            attribute_names=emotionet.schema.attribute_names)
    if name not in REGISTRY:
        raise ValueError(f"unknown database {name!r}; available: {', '.join(available())}")
    return confine(importlib.import_module(REGISTRY[name]).load(root, **options), root)


def confine(table: AnnotationTable, root) -> AnnotationTable:
    """Drops the images whose real path (symbolic links resolved) lies outside the real database root: a counted
    (``skipped["outside_root"]``) and logged skip. Folders are resolved once each."""
    import os

    real_root = os.path.realpath(root)
    folders: dict = {}

    def inside(path: str) -> bool:
        folder = os.path.dirname(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(folders[folder],
                                                                              os.path.basename(path))
        return real.startswith(real_root + os.sep)

    if not len(table) or not os.path.isdir(real_root):
        return table
    keep = table.frame["image"].map(inside).to_numpy(bool)
    if keep.all():
        return table
    logging.getLogger("dmtl.databases").warning(
        "%d image(s) lead outside the database root %s (symbolic links) and are skipped", int((~keep).sum()),
        real_root)
    skipped = dict(table.skipped)
    skipped["outside_root"] = skipped.get("outside_root", 0) + int((~keep).sum())
    return AnnotationTable(table.schema, table.frame[keep].reset_index(drop=True), skipped)
