"""Render a FileDescriptorProto back into `.proto` source text.

Zehanx compiles its contracts against `buf/validate/validate.proto`, but no installed package ships
that file as source: the protovalidate wheel embeds only its serialized descriptor. Tools that read
`.proto` source (buf, the Node.js loader) get a copy rendered from that descriptor by this module.

The printer covers what such descriptors hold: proto2 and proto3 syntax, messages (nested, map
entries), enums, oneofs, labels, defaults, json names, extensions and extension ranges, reserved
ranges and names, services, and options at every level, including custom options whose values are
messages. Comments are not kept (the descriptor has none). Editions files are refused. The output
is laid out the way `buf format` lays it out, so a rendered file passes `buf format -d`.

Usage as a script: `descriptor_to_proto.py DESCRIPTOR_SET OUT_DIR` writes every file of a
FileDescriptorSet under OUT_DIR.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor
from google.protobuf.message import Message

__all__ = ["OptionsDecoder", "render_file"]

_SCALAR_TYPES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}
_LABELS = {
    descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL: "optional",
    descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED: "required",
    descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED: "repeated",
}
_MAX_FIELD_NUMBER = 536870911
_MAX_ENUM_NUMBER = 2147483647
_INDENT = "  "


class OptionsDecoder:
    """Re-reads option messages so that custom options (extensions) become readable.

    Options parsed by the default pool keep extensions they do not know as unknown fields. The
    decoder builds a private pool holding the given files (and their dependencies from the default
    pool) and re-parses every options message there, so the extensions defined in those files are
    recognised and can be printed by name.
    """

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        self._added: set[str] = set()
        by_name = {f.name: f for f in files}
        for name in sorted(by_name):
            self._add(by_name[name], by_name)

    def _add(
        self, fdp: descriptor_pb2.FileDescriptorProto, given: dict[str, descriptor_pb2.FileDescriptorProto]
    ) -> None:
        if fdp.name in self._added:
            return
        for dep in fdp.dependency:
            if dep in given:
                self._add(given[dep], given)
            else:
                dep_fdp = descriptor_pb2.FileDescriptorProto()
                _default_pool_file(dep).CopyToProto(dep_fdp)
                self._add(dep_fdp, given)
        self._pool.Add(fdp)
        self._added.add(fdp.name)

    def decode(self, options: Message) -> Message:
        """Returns `options` re-parsed in the private pool (extensions resolved)."""
        descriptor = self._pool.FindMessageTypeByName(options.DESCRIPTOR.full_name)
        cls = message_factory.GetMessageClass(descriptor)
        return cls.FromString(options.SerializeToString(deterministic=True))


def _default_pool_file(name: str) -> FileDescriptor:
    """Finds `name` in the default pool, importing its generated `_pb2` module if needed."""
    try:
        return descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        module = name.removesuffix(".proto").replace("/", ".") + "_pb2"
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise LookupError(f"dependency {name} is neither given nor importable as {module}") from exc
        return descriptor_pool.Default().FindFileByName(name)


def render_file(fdp: descriptor_pb2.FileDescriptorProto, decoder: OptionsDecoder | None = None) -> str:
    """Returns the `.proto` source text of `fdp`."""
    if fdp.syntax == "editions":
        raise ValueError(f"{fdp.name}: editions files are not supported by this printer")
    return _Printer(fdp, decoder or OptionsDecoder([fdp])).render()


def _json_name(name: str) -> str:
    """protoc's default json_name: drop underscores, upper-case the letter after each."""
    out: list[str] = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def _quote(value: str | bytes) -> str:
    """A double-quoted proto string literal; UTF-8 text stays readable, bytes are octal-escaped."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return (
                '"'
                + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03o}" for b in value)
                + '"'
            )
    out = []
    for ch in value:
        code = ord(ch)
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif code < 32 or code == 127:
            out.append(f"\\{code:03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar_literal(field: FieldDescriptor, value: object) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return (
            field.enum_type.values_by_number[value].name
            if value in field.enum_type.values_by_number
            else str(value)
        )
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return _quote(value)  # type: ignore[arg-type]
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


class _Printer:
    def __init__(self, fdp: descriptor_pb2.FileDescriptorProto, decoder: OptionsDecoder) -> None:
        self.fdp = fdp
        self.decoder = decoder
        self.proto3 = fdp.syntax == "proto3"
        self.lines: list[str] = []

    # --- output helpers -------------------------------------------------------------------
    def emit(self, depth: int, text: str) -> None:
        self.lines.append(_INDENT * depth + text if text else "")

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "" and not self.lines[-1].endswith("{"):
            self.lines.append("")

    def type_name(self, name: str) -> str:
        name = name.lstrip(".")
        prefix = self.fdp.package + "."
        if self.fdp.package and name.startswith(prefix):
            return name[len(prefix) :]
        return name

    # --- options --------------------------------------------------------------------------
    def option_entries(self, options: Message) -> list[tuple[str, str, Message | None]]:
        """Returns (name, scalar literal, message value) for every set option."""
        decoded = self.decoder.decode(options)
        entries: list[tuple[str, str, Message | None]] = []
        for field, value in decoded.ListFields():
            name = f"({field.full_name})" if field.is_extension else field.name
            values = list(value) if field.is_repeated else [value]
            for item in values:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    entries.append((name, "", item))
                else:
                    entries.append((name, _scalar_literal(field, item), None))
        if len(unknown_fields.UnknownFieldSet(decoded)):
            raise ValueError(f"{self.fdp.name}: options hold fields no known extension describes")
        return entries

    def message_literal(self, depth: int, msg: Message) -> list[str]:
        """Text-format body of a message-valued option, one field per line, indented to depth."""
        lines: list[str] = []
        for field, value in msg.ListFields():
            name = f"[{field.full_name}]" if field.is_extension else field.name
            values = list(value) if field.is_repeated else [value]
            for item in values:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    body = self.message_literal(depth + 1, item)
                    if body:
                        lines.append(_INDENT * depth + name + ": {")
                        lines.extend(body)
                        lines.append(_INDENT * depth + "}")
                    else:
                        lines.append(_INDENT * depth + name + ": {}")
                else:
                    lines.append(_INDENT * depth + f"{name}: {_scalar_literal(field, item)}")
        return lines

    def statement_options(self, depth: int, options: Message, *, sort: bool = False) -> None:
        """`option name = value;` lines for files, messages, enums, services and methods.

        File options are sorted by name, as `buf format` orders them.
        """
        entries = self.option_entries(options)
        if sort:
            entries.sort(key=lambda entry: entry[0])
        for name, literal, msg in entries:
            if msg is None:
                self.emit(depth, f"option {name} = {literal};")
                continue
            body = self.message_literal(depth + 1, msg)
            if not body:
                self.emit(depth, f"option {name} = {{}};")
                continue
            self.emit(depth, f"option {name} = {{")
            self.lines.extend(body)
            self.emit(depth, "};")

    def compact_options(self, depth: int, extra: list[tuple[str, str]], options: Message | None) -> list[str]:
        """Bracketed `[a = b, c = {...}]` options for fields and enum values, as lines.

        The first returned line is the suffix for the declaration line itself.
        """
        entries: list[tuple[str, str, Message | None]] = [(n, v, None) for n, v in extra]
        if options is not None:
            entries.extend(self.option_entries(options))
        if not entries:
            return [""]
        if len(entries) == 1:
            name, literal, msg = entries[0]
            if msg is None:
                return [f" [{name} = {literal}]"]
            body = self.message_literal(depth + 1, msg)
            if not body:
                return [f" [{name} = {{}}]"]
            return [f" [{name} = {{", *body, _INDENT * depth + "}]"]
        out = [" ["]
        for i, (name, literal, msg) in enumerate(entries):
            comma = "," if i < len(entries) - 1 else ""
            if msg is None:
                out.append(_INDENT * (depth + 1) + f"{name} = {literal}{comma}")
                continue
            body = self.message_literal(depth + 2, msg)
            if not body:
                out.append(_INDENT * (depth + 1) + f"{name} = {{}}{comma}")
                continue
            out.append(_INDENT * (depth + 1) + f"{name} = {{")
            out.extend(body)
            out.append(_INDENT * (depth + 1) + "}" + comma)
        out.append(_INDENT * depth + "]")
        return out

    def emit_with_options(
        self, depth: int, head: str, extra: list[tuple[str, str]], options: Message | None
    ) -> None:
        parts = self.compact_options(depth, extra, options)
        if len(parts) == 1:
            self.emit(depth, head + parts[0] + ";")
            return
        self.emit(depth, head + parts[0])
        self.lines.extend(parts[1:-1])
        self.lines.append(parts[-1] + ";")

    # --- declarations ---------------------------------------------------------------------
    def render(self) -> str:
        fdp = self.fdp
        self.emit(0, f'syntax = "{fdp.syntax or "proto2"}";')
        self.blank()
        if fdp.package:
            self.emit(0, f"package {fdp.package};")
            self.blank()
        public = set(fdp.public_dependency)
        weak = set(fdp.weak_dependency)
        for i, dep in enumerate(fdp.dependency):
            modifier = "public " if i in public else "weak " if i in weak else ""
            self.emit(0, f'import {modifier}"{dep}";')
        if fdp.dependency:
            self.blank()
        if fdp.HasField("options"):
            self.statement_options(0, fdp.options, sort=True)
            self.blank()
        for service in fdp.service:
            self.service(service)
            self.blank()
        for message in fdp.message_type:
            self.message(0, message)
            self.blank()
        for enum in fdp.enum_type:
            self.enum(0, enum)
            self.blank()
        self.extensions(0, fdp.extension)
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines) + "\n"

    def service(self, service: descriptor_pb2.ServiceDescriptorProto) -> None:
        self.emit(0, f"service {service.name} {{")
        if service.HasField("options"):
            self.statement_options(1, service.options)
        for method in service.method:
            req = ("stream " if method.client_streaming else "") + self.type_name(method.input_type)
            resp = ("stream " if method.server_streaming else "") + self.type_name(method.output_type)
            head = f"rpc {method.name}({req}) returns ({resp})"
            if method.HasField("options") and self.option_entries(method.options):
                self.emit(1, head + " {")
                self.statement_options(2, method.options)
                self.emit(1, "}")
            else:
                self.emit(1, head + ";")
        self.emit(0, "}")

    def message(self, depth: int, message: descriptor_pb2.DescriptorProto) -> None:
        map_entries = {nested.name: nested for nested in message.nested_type if nested.options.map_entry}
        self.emit(depth, f"message {message.name} {{")
        if message.HasField("options"):
            options = descriptor_pb2.MessageOptions()
            options.CopyFrom(message.options)
            options.ClearField("map_entry")
            self.statement_options(depth + 1, options)
        open_oneof: int | None = None
        for field in message.field:
            oneof = field.oneof_index if field.HasField("oneof_index") and not field.proto3_optional else None
            if oneof != open_oneof and open_oneof is not None:
                self.emit(depth + 1, "}")
                open_oneof = None
            if oneof is not None and oneof != open_oneof:
                decl = message.oneof_decl[oneof]
                self.emit(depth + 1, f"oneof {decl.name} {{")
                if decl.HasField("options"):
                    self.statement_options(depth + 2, decl.options)
                open_oneof = oneof
            self.field(depth + 1 + (open_oneof is not None), field, map_entries, in_oneof=oneof is not None)
        if open_oneof is not None:
            self.emit(depth + 1, "}")
        for nested in message.nested_type:
            if nested.options.map_entry:
                continue
            self.message(depth + 1, nested)
        for enum in message.enum_type:
            self.enum(depth + 1, enum)
        self.extensions(depth + 1, message.extension)
        for ext_range in message.extension_range:
            end = "max" if ext_range.end - 1 >= _MAX_FIELD_NUMBER else str(ext_range.end - 1)
            span = str(ext_range.start) if end == str(ext_range.start) else f"{ext_range.start} to {end}"
            if ext_range.HasField("options"):
                self.emit_with_options(depth + 1, f"extensions {span}", [], ext_range.options)
            else:
                self.emit(depth + 1, f"extensions {span};")
        spans = []
        for reserved in message.reserved_range:
            last = reserved.end - 1
            if last >= _MAX_FIELD_NUMBER:
                spans.append(f"{reserved.start} to max")
            elif last == reserved.start:
                spans.append(str(reserved.start))
            else:
                spans.append(f"{reserved.start} to {last}")
        if spans:
            self.emit(depth + 1, f"reserved {', '.join(spans)};")
        if message.reserved_name:
            self.emit(depth + 1, "reserved " + ", ".join(_quote(n) for n in message.reserved_name) + ";")
        self.emit(depth, "}")

    def field(
        self,
        depth: int,
        field: descriptor_pb2.FieldDescriptorProto,
        map_entries: dict[str, descriptor_pb2.DescriptorProto],
        *,
        in_oneof: bool,
    ) -> None:
        entry_name = field.type_name.rsplit(".", 1)[-1]
        if (
            field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
            and field.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            and entry_name in map_entries
        ):
            entry = map_entries[entry_name]
            key, value = entry.field[0], entry.field[1]
            type_text = f"map<{self.field_type(key)}, {self.field_type(value)}>"
            label = ""
        else:
            type_text = self.field_type(field)
            label = self.label(field, in_oneof=in_oneof)
        extra: list[tuple[str, str]] = []
        if field.HasField("default_value"):
            extra.append(("default", self.default_literal(field)))
        if field.HasField("json_name") and field.json_name != _json_name(field.name) and not field.extendee:
            extra.append(("json_name", _quote(field.json_name)))
        options = field.options if field.HasField("options") else None
        head = f"{label}{type_text} {field.name} = {field.number}"
        self.emit_with_options(depth, head, extra, options)

    def label(self, field: descriptor_pb2.FieldDescriptorProto, *, in_oneof: bool) -> str:
        if in_oneof:
            return ""
        if self.proto3:
            if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                return "repeated "
            return "optional " if field.proto3_optional else ""
        return _LABELS[field.label] + " "

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type in _SCALAR_TYPES:
            return _SCALAR_TYPES[field.type]
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_GROUP:
            raise ValueError(f"{self.fdp.name}: group fields are not supported ({field.name})")
        return self.type_name(field.type_name)

    def default_literal(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        value = field.default_value
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            return _quote(value)
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_BYTES:
            # The descriptor holds bytes defaults C-escaped already.
            return '"' + value + '"'
        return value

    def enum(self, depth: int, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.emit(depth, f"enum {enum.name} {{")
        if enum.HasField("options"):
            self.statement_options(depth + 1, enum.options)
        for value in enum.value:
            options = value.options if value.HasField("options") else None
            self.emit_with_options(depth + 1, f"{value.name} = {value.number}", [], options)
        spans = []
        for reserved in enum.reserved_range:  # enum reserved ranges are inclusive
            if reserved.end >= _MAX_ENUM_NUMBER:
                spans.append(f"{reserved.start} to max")
            elif reserved.end == reserved.start:
                spans.append(str(reserved.start))
            else:
                spans.append(f"{reserved.start} to {reserved.end}")
        if spans:
            self.emit(depth + 1, f"reserved {', '.join(spans)};")
        if enum.reserved_name:
            self.emit(depth + 1, "reserved " + ", ".join(_quote(n) for n in enum.reserved_name) + ";")
        self.emit(depth, "}")

    def extensions(self, depth: int, extensions: Iterable[descriptor_pb2.FieldDescriptorProto]) -> None:
        groups: dict[str, list[descriptor_pb2.FieldDescriptorProto]] = {}
        for ext in extensions:
            groups.setdefault(ext.extendee, []).append(ext)
        for extendee, fields in groups.items():
            self.emit(depth, f"extend {self.type_name(extendee)} {{")
            for ext in fields:
                self.field(depth + 1, ext, {}, in_oneof=False)
            self.emit(depth, "}")
            self.blank()
        if groups and self.lines and self.lines[-1] == "" and depth > 0:
            self.lines.pop()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: descriptor_to_proto.py DESCRIPTOR_SET OUT_DIR", file=sys.stderr)
        return 2
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(argv[0]).read_bytes())
    decoder = OptionsDecoder(fds.file)
    for fdp in fds.file:
        target = Path(argv[1]) / fdp.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_file(fdp, decoder), encoding="utf-8")
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
