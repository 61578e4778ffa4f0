#!/usr/bin/env python3
"""Prints the public API of a Rust library crate from rustdoc's JSON output, one sorted line
per item, so that a change to the API shows up in review as a diff of public-api.txt.

scripts/public-api.sh builds the JSON (nightly-only rustdoc flags, allowed on the stable
toolchain with RUSTC_BOOTSTRAP=1) and runs this script; CI runs `scripts/public-api.sh --check`,
which fails with a diff when the API no longer matches the checked-in public-api.txt, and
`scripts/public-api.sh --bless` records the reviewed new API.

Usage:
    public_api.py CRATE.json                       # the API of one build
    public_api.py DEFAULT.json --also NAME=OTHER.json ...
        # the API of the DEFAULT build; a line that is not in every --also build ends with
        # "  [not in NAME]", and a line of an --also build that the default lacks is added
        # with "  [only in NAME]".

What it prints, walking from the crate root through public items only (`visibility` "public"),
module by module, following `pub use` re-exports (also glob ones):
    pub mod / struct / enum / union / trait / type / const / static / macro PATH
    pub field PATH::name: Type              public fields (tuple struct fields are 0, 1, ...)
    pub variant PATH::Name(T) / { a: T }    enum variants with their fields
    pub fn PATH::name(args) -> Ret          free functions, inherent methods, trait methods
                                            (a method of a generic impl whose bounds say more
                                            than the type does ends with "(in impl<..> ..)")
    impl Trait for PATH { type X = T }      trait impls written in this crate or derived, with
                                            their associated types, listed with the type they
                                            are for (or with the trait, for a foreign type)
    pub use ALIAS = PATH                    an item reachable at a second public path: it is
                                            listed in full at one path only (where it is
                                            defined if that is public, else the shortest)
An item marked #[non_exhaustive] or #[deprecated] has that after its line. Constants are listed
with their types, not their values (VERSION would change with every release). Lines are kept
with their item: the item, its fields and variants, its methods, its trait impls.
Items marked #[doc(hidden)] are left out with everything under them (rustdoc itself leaves
them out of its JSON unless --document-hidden-items is given). Blanket impls (`blanket_impl`
set: From<T> for T, Into, Borrow, Any, ToOwned, ...) and synthetic auto-trait impls (Send, Sync,
Unpin, UnwindSafe, ...) are left out. Types are printed as the source names them
(`Result<Registration, Invalid>`), the items themselves with their full public paths.

Standard library only. Written and checked against rustdoc JSON format_version 57 (what Rust
1.95 emits); it also reads a few older spellings (`import` for `use`, `name` for a path's
`path`, attributes as source strings), but accepts only the versions in KNOWN_VERSIONS: any
other version, or a shape it does not know, stops it with a message naming the format_version,
so that a toolchain upgrade is met by a look at the format's changes, not by a quietly wrong
public-api.txt.
"""

import json
import re
import sys

# The rustdoc JSON format versions this script has been checked against: 57 is what Rust 1.95
# emits. Add a version here after checking its changes against the shapes read below.
KNOWN_VERSIONS = (57,)

FORMAT_VERSION = None


class ShapeError(Exception):
    pass


def fail_shape(what, value):
    raise ShapeError(
        f"rustdoc JSON format_version {FORMAT_VERSION}: unknown {what}: "
        f"{json.dumps(value)[:300]}"
    )


def one(d, what):
    """The single (key, value) of an externally tagged enum; a bare string is a unit variant."""
    if isinstance(d, str):
        return d, None
    if isinstance(d, dict) and len(d) == 1:
        return next(iter(d.items()))
    fail_shape(what, d)


class Api:
    def __init__(self, doc):
        self.doc = doc
        self.index = doc["index"]
        self.paths = doc.get("paths", {})
        self.root = str(doc["root"])
        # id -> {public path (tuple of segments): path of the module it was found in}
        self.locations = {}
        self.external_uses = []  # (alias path, source text)
        self.lines = []  # (sort path, rank, text)
        self.emitted_impls = set()

    # ---------------------------------------------------------------- items and attributes

    def item(self, id_):
        return self.index.get(str(id_)) if id_ is not None else None

    @staticmethod
    def kind(item):
        k, _ = one(item["inner"], "item kind")
        return "use" if k == "import" else k

    @staticmethod
    def inner(item):
        _, v = one(item["inner"], "item kind")
        return v

    @staticmethod
    def attr_texts(item):
        out = []
        for a in item.get("attrs", []):
            if isinstance(a, str):
                # Up to version 53 attributes were their source text ("#[non_exhaustive]"); since
                # then a known attribute is a name ("non_exhaustive") and others {"other": text}.
                out.append(a if a.lstrip().startswith("#") else f"#[{a}]")
            else:
                k, v = one(a, "attribute")
                if k == "other":
                    out.append(v)
                elif v is None:
                    out.append(f"#[{k}]")
                else:
                    out.append(f"#[{k}({json.dumps(v, sort_keys=True)})]")
        return out

    def is_hidden(self, item):
        return any(re.search(r"doc\s*\(\s*hidden", a) for a in self.attr_texts(item))

    def is_non_exhaustive(self, item):
        return any(re.fullmatch(r"#\[\s*non_exhaustive\s*\]", a.strip()) for a in self.attr_texts(item))

    def marks(self, item):
        """Attributes that belong to the API, put after the item's line."""
        out = []
        if self.is_non_exhaustive(item):
            out.append("#[non_exhaustive]")
        if item.get("deprecation") is not None:
            out.append("#[deprecated]")
        return (" " + " ".join(out)) if out else ""

    @staticmethod
    def is_public(item):
        return item.get("visibility") == "public"

    # ---------------------------------------------------------------- reachability

    def walk(self):
        root = self.item(self.root)
        if root is None or self.kind(root) != "module":
            fail_shape("crate root", self.root)
        self.add_location(self.root, (root["name"],), None)
        self.walk_module(self.root, (root["name"],), set())

    def add_location(self, id_, path, parent):
        self.locations.setdefault(str(id_), {})
        self.locations[str(id_)].setdefault(path, parent)

    def module_entries(self, module_id, stack):
        """(name, id or None, external source) of what a module makes public, uses resolved."""
        module = self.item(module_id)
        entries = []
        explicit = set()
        globs = []
        for child_id in self.inner(module)["items"]:
            child = self.item(child_id)
            if child is None or not self.is_public(child) or self.is_hidden(child):
                continue
            kind = self.kind(child)
            if kind == "impl":
                continue
            if kind == "use":
                use = self.inner(child)
                if use.get("is_glob") or use.get("glob"):
                    globs.append(use)
                    continue
                target = self.item(use.get("id"))
                if target is not None and self.is_hidden(target):
                    continue
                if target is not None and target.get("crate_id") == 0:
                    entries.append((use["name"], str(use["id"]), None))
                else:
                    entries.append((use["name"], None, self.external_path(use)))
                explicit.add(use["name"])
            else:
                if child.get("name") is None:
                    continue
                entries.append((child["name"], str(child_id), None))
                explicit.add(child["name"])
        for use in globs:
            target = self.item(use.get("id"))
            if target is None or target.get("crate_id") != 0:
                entries.append(("*", None, self.external_path(use) + "::*"))
                continue
            tkind = self.kind(target)
            if tkind == "module":
                if str(use["id"]) in stack:
                    continue
                for name, id_, ext in self.module_entries(str(use["id"]), stack | {str(use["id"])}):
                    if name not in explicit:
                        entries.append((name, id_, ext))
            elif tkind == "enum":
                for vid in self.inner(target)["variants"]:
                    v = self.item(vid)
                    if v is not None and not self.is_hidden(v) and v["name"] not in explicit:
                        entries.append((v["name"], str(vid), None))
            else:
                fail_shape("glob re-export target kind", tkind)
        return entries

    @staticmethod
    def external_path(use):
        # As the source names it (`std::collections::HashMap`), not where the item is defined
        # (`std::collections::hash::map::HashMap`), which a dependency may move at will.
        return use["source"]

    def walk_module(self, module_id, path, stack):
        if len(stack) > 64:
            return
        for name, id_, ext in self.module_entries(module_id, stack | {module_id}):
            child_path = path + (name,)
            if id_ is None:
                self.external_uses.append(("::".join(child_path), ext))
                continue
            self.add_location(id_, child_path, path)
            child = self.item(id_)
            if self.kind(child) == "module" and id_ not in stack:
                self.walk_module(id_, child_path, stack | {module_id})

    def canonical(self, id_):
        locs = self.locations.get(str(id_))
        if not locs:
            return None
        summary = self.paths.get(str(id_))
        if summary is not None and tuple(summary["path"]) in locs:
            return tuple(summary["path"])
        return min(locs, key=lambda p: (len(p), p))

    # ---------------------------------------------------------------- output

    def emit(self, owner, group, text):
        """One line, kept with its owner: an item (group 0), then its fields and variants
        (group 1), its methods and other associated items (group 2), its trait impls (group 3)."""
        self.lines.append(((tuple(owner.split("::")), group), text))

    def run(self):
        self.walk()
        canon = {id_: self.canonical(id_) for id_ in self.locations}
        # Variants reached through a glob re-export of their enum (`pub use Enum::*`).
        variant_of = {}
        for id_ in canon:
            item = self.item(id_)
            if self.kind(item) == "enum":
                for vid in self.inner(item)["variants"]:
                    variant_of[str(vid)] = id_
        for id_, locs in self.locations.items():
            if self.kind(self.item(id_)) != "variant":
                continue
            enum = variant_of.get(id_)
            if enum is None:
                continue  # its enum is not public under any path: nothing to point to
            target = "::".join(canon[enum] + (self.item(id_)["name"],))
            for path in locs:
                self.emit("::".join(path), 0, f"pub use {'::'.join(path)} = {target}")
        for id_, locs in self.locations.items():
            c = canon[id_]
            if self.kind(self.item(id_)) == "variant":
                continue
            for path, parent in locs.items():
                if path == c:
                    continue
                # Listed only where its module is itself listed in full, not under every alias
                # of a re-exported module.
                parent_ids = [i for i, p in canon.items() if p == parent]
                if parent is None or parent_ids:
                    self.emit("::".join(path), 0, f"pub use {'::'.join(path)} = {'::'.join(c)}")
        for alias, source in self.external_uses:
            self.emit(alias, 0, f"pub use {alias} = {source}")
        for id_, c in canon.items():
            self.render_item(id_, "::".join(c))
        # Impls of this crate's public traits for types that are not listed above.
        for id_, c in canon.items():
            item = self.item(id_)
            if self.kind(item) == "trait":
                for impl_id in self.inner(item).get("implementations", []):
                    impl = self.item(impl_id)
                    if impl is not None and impl.get("crate_id") == 0:
                        self.render_impl(impl_id, None, None, owner="::".join(c))
        keys = {}
        for key, text in self.lines:
            keys[text] = min(key, keys.get(text, key))
        return keys

    def render_item(self, id_, path):
        item = self.item(id_)
        kind = self.kind(item)
        inner = self.inner(item)
        marks = self.marks(item)
        if kind == "module":
            self.emit(path, 0, f"pub mod {path}{marks}")
        elif kind == "struct":
            g = inner["generics"]
            self.emit(path, 0, f"pub struct {path}{self.generic_params(g)}{self.where_clause(g)}{marks}")
            skind, sval = one(inner["kind"], "struct kind")
            if skind == "plain":
                self.render_fields(sval["fields"], path)
            elif skind == "tuple":
                self.render_fields([f for f in sval if f is not None], path)
            elif skind != "unit":
                fail_shape("struct kind", inner["kind"])
            self.render_impls(inner.get("impls", []), id_, path)
        elif kind == "union":
            g = inner["generics"]
            self.emit(path, 0, f"pub union {path}{self.generic_params(g)}{self.where_clause(g)}{marks}")
            self.render_fields(inner["fields"], path)
            self.render_impls(inner.get("impls", []), id_, path)
        elif kind == "enum":
            g = inner["generics"]
            self.emit(path, 0, f"pub enum {path}{self.generic_params(g)}{self.where_clause(g)}{marks}")
            for vid in inner["variants"]:
                self.render_variant(vid, path)
            self.render_impls(inner.get("impls", []), id_, path)
        elif kind == "variant":
            # Reached through a glob re-export of an enum: listed with its enum.
            pass
        elif kind == "function":
            self.emit(path, 0, self.function(item, path))
        elif kind == "trait":
            g = inner["generics"]
            bounds = self.bounds(inner.get("bounds", []))
            head = "pub " + ("unsafe " if inner.get("is_unsafe") else "") + ("auto " if inner.get("is_auto") else "")
            self.emit(path, 0, f"{head}trait {path}{self.generic_params(g)}"
                      f"{': ' + bounds if bounds else ''}{self.where_clause(g)}{marks}")
            for member in inner["items"]:
                m = self.item(member)
                if m is not None and not self.is_hidden(m):
                    self.render_assoc(m, path, m["name"])
        elif kind == "type_alias":
            g = inner["generics"]
            self.emit(path, 0, f"pub type {path}{self.generic_params(g)}{self.where_clause(g)} = {self.ty(inner['type'])}{marks}")
        elif kind == "constant":
            self.emit(path, 0, f"pub const {path}: {self.ty(inner['type'])}{marks}")
        elif kind == "static":
            mut = "mut " if inner.get("is_mutable") or inner.get("mutable") else ""
            unsafe = "unsafe " if inner.get("is_unsafe") else ""
            self.emit(path, 0, f"pub {unsafe}static {mut}{path}: {self.ty(inner['type'])}{marks}")
        elif kind == "macro":
            self.emit(path, 0, f"pub macro_rules! {path}{marks}")
        elif kind == "proc_macro":
            self.emit(path, 0, f"pub proc_macro {path}{marks}")
        elif kind == "extern_crate":
            self.emit(path, 0, f"pub extern crate {path} = {inner.get('name')}{marks}")
        elif kind == "trait_alias":
            self.emit(path, 0, f"pub trait {path}{self.generic_params(inner['generics'])} = {self.bounds(inner['params'])}{marks}")
        elif kind == "primitive":
            pass
        else:
            fail_shape("public item kind", kind)

    def render_fields(self, field_ids, path):
        for fid in field_ids:
            field = self.item(fid)
            if field is None or not self.is_public(field) or self.is_hidden(field):
                continue
            ty = self.inner(field)
            self.emit(path, 1,
                      f"pub field {path}::{field['name']}: {self.ty(ty)}{self.marks(field)}")

    def render_variant(self, vid, path):
        variant = self.item(vid)
        if variant is None or self.is_hidden(variant):
            return
        inner = self.inner(variant)
        vkind, vval = one(inner["kind"], "variant kind")
        if vkind == "plain":
            fields = ""
        elif vkind == "tuple":
            parts = []
            for fid in vval:
                field = self.item(fid) if fid is not None else None
                parts.append("_" if field is None or self.is_hidden(field) else self.ty(self.inner(field)))
            fields = "(" + ", ".join(parts) + ")"
        elif vkind == "struct":
            parts = []
            for fid in vval["fields"]:
                field = self.item(fid)
                if field is not None and not self.is_hidden(field):
                    parts.append(f"{field['name']}: {self.ty(self.inner(field))}")
            if vval.get("has_stripped_fields"):
                parts.append("..")
            fields = " { " + ", ".join(parts) + " }"
        else:
            fail_shape("variant kind", inner["kind"])
        disc = inner.get("discriminant")
        disc = f" = {disc['expr']}" if disc else ""
        name = f"{path}::{variant['name']}"
        self.emit(path, 1, f"pub variant {name}{fields}{disc}{self.marks(variant)}")

    def render_impls(self, impl_ids, self_id, self_path):
        for impl_id in impl_ids:
            impl = self.item(impl_id)
            if impl is not None and self.kind(impl) == "impl":
                k, v = one(self.inner(impl)["for"], "type")
                if k == "resolved_path" and str(v.get("id")) != str(self_id) and self.canonical(v.get("id")):
                    # `impl From<ThisType> for OtherPublicType`: listed with the other type.
                    continue
            self.render_impl(impl_id, self_id, self_path)

    def render_impl(self, impl_id, self_id, self_path, owner=None):
        if str(impl_id) in self.emitted_impls:
            return
        impl_item = self.item(impl_id)
        if impl_item is None or self.is_hidden(impl_item):
            return
        impl = self.inner(impl_item)
        if impl.get("is_synthetic") or impl.get("synthetic") or impl.get("blanket_impl") is not None:
            return
        trait = impl.get("trait")
        if trait is not None:
            trait_item = self.item(trait.get("id"))
            if trait_item is not None and trait_item.get("crate_id") == 0:
                if self.canonical(trait.get("id")) is None or self.is_hidden(trait_item):
                    return  # a trait of this crate that no one outside can name
        self.emitted_impls.add(str(impl_id))
        for_ty = self.ty(impl["for"], self_id=self_id, self_path=self_path)
        g = impl["generics"]
        sort_path = self_path or owner or for_ty
        if trait is None:
            # Inherent impl: its public items, as items of the type.
            # A generic impl is named after the methods when it says more than the type does
            # (bounds, a where clause, or a type other than the type's own parameters).
            extra = ""
            plain = self_path is not None and all(
                one(p["kind"], "generic parameter kind")[0] != "type"
                or not (self.inner_kind_value(p)["bounds"] or self.inner_kind_value(p).get("default"))
                for p in g["params"]
            ) and not g["where_predicates"] and for_ty == self_path + self.param_names(self.item(self_id))
            if (g["params"] or g["where_predicates"]) and not plain:
                extra = f"  (in impl{self.generic_params(g)} {for_ty}{self.where_clause(g)})"
            base = self_path or for_ty
            for member in impl["items"]:
                m = self.item(member)
                if m is None or not self.is_public(m) or self.is_hidden(m):
                    continue
                self.render_assoc(m, base, m["name"], extra)
            return
        head = "impl" + self.generic_params(g) + " "
        if impl.get("is_unsafe"):
            head = "unsafe " + head
        neg = "!" if impl.get("is_negative") else ""
        text = f"{head}{neg}{self.path(trait)} for {for_ty}{self.where_clause(g)}"
        assoc = []
        for member in impl["items"]:
            m = self.item(member)
            if m is None:
                continue
            mk = self.kind(m)
            mi = self.inner(m)
            if mk == "assoc_type" and mi.get("type") is not None:
                assoc.append(f"type {m['name']} = {self.ty(mi['type'])}")
            elif mk == "assoc_const":
                assoc.append(f"const {m['name']}: {self.ty(mi['type'])}")
        if assoc:
            text += " { " + "; ".join(sorted(assoc)) + " }"
        self.emit(sort_path, 3, text)

    @staticmethod
    def inner_kind_value(param):
        return one(param["kind"], "generic parameter kind")[1] or {}

    def param_names(self, item):
        """`<'a, T>`: how a type names its own generic parameters."""
        params = self.inner(item).get("generics", {}).get("params", [])
        names = [p["name"] for p in params
                 if not self.inner_kind_value(p).get("is_synthetic")]
        return "<" + ", ".join(names) + ">" if names else ""

    def render_assoc(self, m, owner, name, extra=""):
        path = f"{owner}::{name}"
        kind = self.kind(m)
        inner = self.inner(m)
        marks = self.marks(m)
        if kind == "function":
            self.emit(owner, 2, self.function(m, path) + extra + marks)
        elif kind == "assoc_const":
            self.emit(owner, 2, f"pub const {path}: {self.ty(inner['type'])}{extra}{marks}")
        elif kind == "assoc_type":
            bounds = self.bounds(inner.get("bounds", []))
            default = inner.get("type") if "type" in inner else inner.get("default")
            text = f"pub type {path}{self.generic_params(inner.get('generics'))}"
            if bounds:
                text += ": " + bounds
            if default is not None:
                text += " = " + self.ty(default)
            self.emit(owner, 2, text + self.where_clause(inner.get("generics")) + extra + marks)
        else:
            fail_shape("associated item kind", kind)

    # ---------------------------------------------------------------- signatures and types

    def function(self, item, path):
        inner = self.inner(item)
        sig = inner.get("sig") or inner.get("decl")
        header = inner.get("header", {})
        g = inner["generics"]
        quals = ""
        if header.get("is_const") or header.get("const_"):
            quals += "const "
        if header.get("is_async") or header.get("async_"):
            quals += "async "
        if header.get("is_unsafe") or header.get("unsafe_"):
            quals += "unsafe "
        quals += self.abi(header.get("abi", "Rust"))
        args = [self.fn_arg(name, ty) for name, ty in sig["inputs"]]
        if sig.get("is_c_variadic") or sig.get("c_variadic"):
            args.append("...")
        out = sig.get("output")
        ret = f" -> {self.ty(out)}" if out is not None else ""
        return f"pub {quals}fn {path}{self.generic_params(g)}({', '.join(args)}){ret}{self.where_clause(g)}"

    def abi(self, abi):
        if abi == "Rust":
            return ""
        k, v = one(abi, "abi")
        if k == "Other":
            return f'extern "{v}" '
        name = {"C": "C", "Cdecl": "cdecl", "Stdcall": "stdcall", "Fastcall": "fastcall",
                "Aapcs": "aapcs", "Win64": "win64", "SysV64": "sysv64", "System": "system"}.get(k, k)
        unwind = "-unwind" if isinstance(v, dict) and v.get("unwind") else ""
        return f'extern "{name}{unwind}" '

    def fn_arg(self, name, ty):
        if name == "self":
            k, v = one(ty, "type")
            if k == "generic" and v == "Self":
                return "self"
            if k == "borrowed_ref":
                inner_k, inner_v = one(v["type"], "type")
                if inner_k == "generic" and inner_v == "Self":
                    lt = f"{v['lifetime']} " if v.get("lifetime") else ""
                    mut = "mut " if v.get("is_mutable", v.get("mutable")) else ""
                    return f"&{lt}{mut}self"
            return f"self: {self.ty(ty)}"
        return f"{name}: {self.ty(ty)}"

    def generic_params(self, generics, keep_synthetic=False):
        if not generics:
            return ""
        parts = []
        for p in generics.get("params", []):
            k, v = one(p["kind"], "generic parameter kind")
            if k == "lifetime":
                outlives = v.get("outlives", []) if v else []
                parts.append(p["name"] + (": " + " + ".join(outlives) if outlives else ""))
            elif k == "type":
                if v.get("is_synthetic", v.get("synthetic")) and not keep_synthetic:
                    continue  # an argument's `impl Trait`, printed in the argument
                text = p["name"]
                bounds = self.bounds(v.get("bounds", []))
                if bounds:
                    text += ": " + bounds
                if v.get("default") is not None:
                    text += " = " + self.ty(v["default"])
                parts.append(text)
            elif k == "const":
                ty = v.get("type", v.get("ty"))
                text = f"const {p['name']}: {self.ty(ty)}"
                if v.get("default") is not None:
                    text += f" = {v['default']}"
                parts.append(text)
            else:
                fail_shape("generic parameter kind", p["kind"])
        return "<" + ", ".join(parts) + ">" if parts else ""

    def where_clause(self, generics):
        if not generics or not generics.get("where_predicates"):
            return ""
        parts = []
        for pred in generics["where_predicates"]:
            k, v = one(pred, "where predicate")
            if k == "bound_predicate":
                hrtb = self.hrtb(v.get("generic_params", []))
                parts.append(f"{hrtb}{self.ty(v['type'])}: {self.bounds(v['bounds'])}")
            elif k in ("lifetime_predicate", "region_predicate"):
                parts.append(f"{v['lifetime']}: {' + '.join(v['outlives'])}")
            elif k == "eq_predicate":
                parts.append(f"{self.ty(v['lhs'])} = {self.term(v['rhs'])}")
            else:
                fail_shape("where predicate", pred)
        return " where " + ", ".join(parts)

    def hrtb(self, params):
        if not params:
            return ""
        return "for" + self.generic_params({"params": params}, keep_synthetic=True) + " "

    def bounds(self, bounds):
        parts = []
        for b in bounds:
            k, v = one(b, "generic bound")
            if k == "trait_bound":
                modifier = {"none": "", "maybe": "?", "maybe_const": "~const "}.get(v.get("modifier", "none"))
                if modifier is None:
                    fail_shape("trait bound modifier", v.get("modifier"))
                parts.append(f"{self.hrtb(v.get('generic_params', []))}{modifier}{self.path(v['trait'])}")
            elif k == "outlives":
                parts.append(v)
            elif k == "use":
                names = []
                for arg in v:
                    if isinstance(arg, str):
                        names.append(arg)
                    else:
                        _, name = one(arg, "precise capturing argument")
                        names.append(name)
                parts.append("use<" + ", ".join(names) + ">")
            else:
                fail_shape("generic bound", b)
        return " + ".join(parts)

    def path(self, p, self_id=None, self_path=None):
        name = p.get("path", p.get("name"))
        if name is None:
            fail_shape("path", p)
        if name.startswith("$crate::"):
            # A path a macro wrote (derive bounds: `$crate::fmt::Debug`): the item's own path.
            summary = self.paths.get(str(p.get("id")))
            name = "::".join(summary["path"]) if summary else name[len("$crate::"):]
        if self_id is not None and str(p.get("id")) == str(self_id):
            name = self_path
        return name + self.generic_args(p.get("args"))

    def generic_args(self, args):
        if args is None:
            return ""
        k, v = one(args, "generic arguments")
        if k == "angle_bracketed":
            parts = []
            for a in v.get("args", []):
                ak, av = one(a, "generic argument")
                if ak == "lifetime":
                    parts.append(av)
                elif ak == "type":
                    parts.append(self.ty(av))
                elif ak == "const":
                    parts.append(av.get("expr") or str(av.get("value")))
                elif ak == "infer":
                    parts.append("_")
                else:
                    fail_shape("generic argument", a)
            for c in v.get("constraints", v.get("bindings", [])):
                cargs = self.generic_args(c.get("args"))
                bk, bv = one(c["binding"], "associated item constraint")
                if bk == "equality":
                    parts.append(f"{c['name']}{cargs} = {self.term(bv)}")
                elif bk == "constraint":
                    parts.append(f"{c['name']}{cargs}: {self.bounds(bv)}")
                else:
                    fail_shape("associated item constraint", c)
            return "<" + ", ".join(parts) + ">" if parts else ""
        if k == "parenthesized":
            inputs = ", ".join(self.ty(t) for t in v["inputs"])
            out = f" -> {self.ty(v['output'])}" if v.get("output") is not None else ""
            return f"({inputs}){out}"
        if k == "return_type_notation":
            return "(..)"
        fail_shape("generic arguments", args)

    def term(self, t):
        k, v = one(t, "term")
        if k == "type":
            return self.ty(v)
        if k == "constant":
            return v.get("expr") or str(v.get("value"))
        fail_shape("term", t)

    def ty(self, t, self_id=None, self_path=None):
        k, v = one(t, "type")
        if k == "resolved_path":
            return self.path(v, self_id, self_path)
        if k == "primitive":
            return v
        if k == "generic":
            return v
        if k == "tuple":
            inner = [self.ty(x) for x in v]
            return "(" + inner[0] + ",)" if len(inner) == 1 else "(" + ", ".join(inner) + ")"
        if k == "slice":
            return f"[{self.ty(v)}]"
        if k == "array":
            return f"[{self.ty(v['type'])}; {v['len']}]"
        if k == "borrowed_ref":
            lt = f"{v['lifetime']} " if v.get("lifetime") else ""
            mut = "mut " if v.get("is_mutable", v.get("mutable")) else ""
            return f"&{lt}{mut}{self.ty(v['type'])}"
        if k == "raw_pointer":
            mut = "mut" if v.get("is_mutable", v.get("mutable")) else "const"
            return f"*{mut} {self.ty(v['type'])}"
        if k == "impl_trait":
            return "impl " + self.bounds(v)
        if k == "dyn_trait":
            parts = [self.hrtb(pt.get("generic_params", [])) + self.path(pt["trait"]) for pt in v["traits"]]
            if v.get("lifetime"):
                parts.append(v["lifetime"])
            return "dyn " + " + ".join(parts)
        if k == "qualified_path":
            args = self.generic_args(v.get("args"))
            self_ty = self.ty(v["self_type"])
            trait = v.get("trait")
            if trait is None or not trait.get("path", trait.get("name")):
                return f"{self_ty}::{v['name']}{args}"  # `I::Item`, `Self::Out`
            return f"<{self_ty} as {self.path(v['trait'])}>::{v['name']}{args}"
        if k == "function_pointer":
            sig = v.get("sig") or v.get("decl")
            header = v.get("header", {})
            quals = ("unsafe " if header.get("is_unsafe") or header.get("unsafe_") else "")
            quals += self.abi(header.get("abi", "Rust"))
            hrtb = self.hrtb(v.get("generic_params", []))
            args = []
            for name, at in sig["inputs"]:
                args.append(f"{name}: {self.ty(at)}" if name and name != "_" else self.ty(at))
            if sig.get("is_c_variadic") or sig.get("c_variadic"):
                args.append("...")
            ret = f" -> {self.ty(sig['output'])}" if sig.get("output") is not None else ""
            return f"{hrtb}{quals}fn({', '.join(args)}){ret}"
        if k == "pat":
            return self.ty(v["type"]) + " is " + v.get("__pat_unstable_do_not_use", "..")
        if k == "infer":
            return "_"
        fail_shape("type", t)


def load(path):
    global FORMAT_VERSION
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"{path}: cannot read rustdoc JSON: {e}")
    FORMAT_VERSION = doc.get("format_version")
    if FORMAT_VERSION not in KNOWN_VERSIONS:
        sys.exit(
            f"{path}: rustdoc JSON format_version {FORMAT_VERSION} is not one this script knows "
            f"({', '.join(map(str, KNOWN_VERSIONS))}): read the "
            "format's changes (the rustdoc-types crate's changelog) and update scripts/public_api.py"
        )
    return doc


def api_lines(path):
    try:
        return Api(load(path)).run()
    except ShapeError as e:
        sys.exit(f"{path}: {e}; update scripts/public_api.py for it")
    except (KeyError, TypeError, AttributeError) as e:
        sys.exit(
            f"{path}: rustdoc JSON format_version {FORMAT_VERSION} has a shape this script does "
            f"not know ({type(e).__name__}: {e}); update scripts/public_api.py for it"
        )


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    main_lines = api_lines(argv[0])
    others = []
    rest = argv[1:]
    while rest:
        if rest[0] != "--also" or len(rest) < 2 or "=" not in rest[1]:
            sys.exit("usage: public_api.py CRATE.json [--also NAME=OTHER.json]...")
        name, path = rest[1].split("=", 1)
        others.append((name, api_lines(path)))
        rest = rest[2:]
    out = []
    for text, key in main_lines.items():
        missing = [name for name, lines in others if text not in lines]
        out.append((key, text + (f"  [not in {', '.join(missing)}]" if missing else "")))
    for name, lines in others:
        for text, key in lines.items():
            if text not in main_lines:
                out.append((key, f"{text}  [only in {name}]"))
    sys.stdout.write("".join(text + "\n" for _, text in sorted(set(out))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
