// JSON bake files. buildx reads them with HCL's JSON syntax (hclparse.ParseJSON), so they are the
// same blocks and attributes as an HCL file: top-level keys "variable", "target", "group" and
// "function" hold objects of labelled blocks, and every string is a template (`${TAG}` is
// interpolated, `$${` escapes). Our own reader keeps each value's line and column for errors.

enum JSONNode {
    case null, bool(Bool), number(Double)
    case string(String)
    case array([(JSONNode, SourcePos)])
    case object([(key: String, value: JSONNode, pos: SourcePos)])
}

struct JSONReader {
    var lexer: Lexer
    /// Arrays and objects the value being read is inside (recursion takes stack for each).
    var depth = 0
    static let maxDepth = 64

    static func parse(file: String, bytes: [UInt8]) throws -> (JSONNode, SourcePos) {
        var r = JSONReader(lexer: Lexer(file: file, bytes: bytes))
        let v = try r.value()
        try r.lexer.skipTrivia(newlines: true)
        guard r.lexer.atEnd else { throw r.lexer.pos.error("unexpected text after the JSON value") }
        return v
    }

    private mutating func skip() {
        while let b = lexer.peekByte(), b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { lexer.advance() }
    }

    mutating func value() throws -> (JSONNode, SourcePos) {
        skip()
        let pos = lexer.pos
        guard let b = lexer.peekByte() else { throw pos.error("unexpected end of JSON") }
        switch b {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maxDepth else {
                throw pos.error("arrays and objects nested more than \(Self.maxDepth) levels deep: bake files here nest at most \(Self.maxDepth)")
            }
            return b == UInt8(ascii: "{") ? try object(pos) : try array(pos)
        case UInt8(ascii: "\""):
            return (.string(try string()), pos)
        default:
            if lexer.matches("true") { for _ in 0..<4 { lexer.advance() }; return (.bool(true), pos) }
            if lexer.matches("false") { for _ in 0..<5 { lexer.advance() }; return (.bool(false), pos) }
            if lexer.matches("null") { for _ in 0..<4 { lexer.advance() }; return (.null, pos) }
            var s: [UInt8] = []
            while let c = lexer.peekByte(), Lexer.isDigit(c) || "+-.eE".utf8.contains(c) { s.append(c); lexer.advance() }
            guard !s.isEmpty, let d = Double(String(decoding: s, as: UTF8.self)) else {
                throw pos.error("expected a JSON value")
            }
            return (.number(d), pos)
        }
    }

    private mutating func object(_ pos: SourcePos) throws -> (JSONNode, SourcePos) {
        lexer.advance()
        var items: [(key: String, value: JSONNode, pos: SourcePos)] = []
        skip()
        if lexer.peekByte() == UInt8(ascii: "}") { lexer.advance(); return (.object(items), pos) }
        while true {
            skip()
            let kpos = lexer.pos
            guard lexer.peekByte() == UInt8(ascii: "\"") else { throw kpos.error("expected a quoted key in a JSON object") }
            let key = try string()
            skip()
            guard lexer.peekByte() == UInt8(ascii: ":") else { throw lexer.pos.error("expected \":\" after the key \"\(key)\"") }
            lexer.advance()
            let (v, _) = try value()
            items.append((key, v, kpos))
            skip()
            if lexer.peekByte() == UInt8(ascii: ",") { lexer.advance(); continue }
            if lexer.peekByte() == UInt8(ascii: "}") { lexer.advance(); return (.object(items), pos) }
            throw lexer.pos.error("expected \",\" or \"}\" in a JSON object")
        }
    }

    private mutating func array(_ pos: SourcePos) throws -> (JSONNode, SourcePos) {
        lexer.advance()
        var items: [(JSONNode, SourcePos)] = []
        skip()
        if lexer.peekByte() == UInt8(ascii: "]") { lexer.advance(); return (.array(items), pos) }
        while true {
            items.append(try value())
            skip()
            if lexer.peekByte() == UInt8(ascii: ",") { lexer.advance(); continue }
            if lexer.peekByte() == UInt8(ascii: "]") { lexer.advance(); return (.array(items), pos) }
            throw lexer.pos.error("expected \",\" or \"]\" in a JSON array")
        }
    }

    private mutating func string() throws -> String {
        let start = lexer.pos
        lexer.advance()
        var out: [UInt8] = []
        while true {
            guard let b = lexer.peekByte(), b != 0x0A else { throw start.error("unterminated JSON string") }
            lexer.advance()
            if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            guard b == UInt8(ascii: "\\") else { out.append(b); continue }
            let epos = lexer.pos
            guard let e = lexer.peekByte() else { throw start.error("unterminated JSON string") }
            lexer.advance()
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "/"), UInt8(ascii: "\\"), UInt8(ascii: "\""): out.append(e)
            case UInt8(ascii: "u"):
                var hex = ""
                for _ in 0..<4 { if let h = lexer.peekByte() { hex.append(Character(UnicodeScalar(h))); lexer.advance() } }
                guard var v = UInt32(hex, radix: 16) else { throw epos.error("invalid \\u escape") }
                if (0xD800..<0xDC00).contains(v), lexer.matches("\\u") {
                    lexer.advance(); lexer.advance()
                    var lo = ""
                    for _ in 0..<4 { if let h = lexer.peekByte() { lo.append(Character(UnicodeScalar(h))); lexer.advance() } }
                    if let l = UInt32(lo, radix: 16) { v = 0x10000 + ((v - 0xD800) << 10) + (l - 0xDC00) }
                }
                out.append(contentsOf: Array(String(UnicodeScalar(v).map { Character($0) } ?? "\u{FFFD}").utf8))
            default:
                throw epos.error("invalid escape in a JSON string")
            }
        }
    }
}

enum BakeJSON {
    static let blockTypes: Set<String> = ["variable", "target", "group", "function"]

    /// A JSON bake file as the same body an HCL file gives.
    static func parse(file: String, bytes: [UInt8]) throws -> Body {
        let (root, pos) = try JSONReader.parse(file: file, bytes: bytes)
        guard case .object(let items) = root else { throw pos.error("a JSON bake file is an object (\"target\": {…})") }
        var body = Body()
        for item in items {
            if blockTypes.contains(item.key) {
                guard case .object(let blocks) = item.value else {
                    throw item.pos.error("\"\(item.key)\" must be an object of \(item.key)s by name")
                }
                for b in blocks {
                    guard case .object(let attrs) = b.value else {
                        throw b.pos.error("\(item.key) \"\(b.key)\" must be an object of attributes")
                    }
                    var inner = Body()
                    for a in attrs {
                        // A function's params are names, not strings to interpolate.
                        let expr = item.key == "function" && (a.key == "params" || a.key == "variadic_params")
                            ? try names(a.value, a.pos) : try self.expr(a.value, a.pos)
                        inner.attributes.append(Attribute(name: a.key, expr: expr, pos: a.pos))
                    }
                    body.blocks.append(Block(type: item.key, labels: [b.key], body: inner, pos: b.pos))
                }
            } else {
                body.attributes.append(Attribute(name: item.key, expr: try expr(item.value, item.pos), pos: item.pos))
            }
        }
        return body
    }

    private static func names(_ node: JSONNode, _ pos: SourcePos) throws -> Expr {
        switch node {
        case .string(let s): return Expr(.variable(s), pos)
        case .array(let items):
            return Expr(.tuple(try items.map { try names($0.0, $0.1) }), pos)
        default: throw pos.error("function parameters are names (strings)")
        }
    }

    static func expr(_ node: JSONNode, _ pos: SourcePos) throws -> Expr {
        switch node {
        case .null: return Expr(.literal(.null), pos)
        case .bool(let b): return Expr(.literal(.bool(b)), pos)
        case .number(let d): return Expr(.literal(.number(d)), pos)
        case .string(let s):
            // The string's text is read as a template; positions inside count from its quote.
            var p = HCLParser(file: pos.file, bytes: Array(s.utf8) + [UInt8(ascii: "\u{1}")])
            p.lexer.line = pos.line
            p.lexer.column = pos.column + 1
            let parts = try p.parseTemplateText()
            return HCLParser.templateExpr(parts, pos)
        case .array(let items):
            return Expr(.tuple(try items.map { try expr($0.0, $0.1) }), pos)
        case .object(let items):
            return Expr(.object(try items.map { (Expr(.literal(.string($0.key)), $0.pos), try expr($0.value, $0.pos)) }), pos)
        }
    }
}

extension HCLParser {
    /// A JSON string's text (already unescaped) as a template, up to the \u{1} sentinel.
    mutating func parseTemplateText() throws -> [TemplatePart] {
        var parts: [TemplatePart] = []
        var lit: [UInt8] = []
        while let b = lexer.peekByte(), b != 1 {
            if lexer.matches("$${") || lexer.matches("%%{") {
                lit.append(b); lit.append(UInt8(ascii: "{"))
                lexer.advance(); lexer.advance(); lexer.advance()
                continue
            }
            if lexer.matches("${") {
                if !lit.isEmpty { parts.append(.literal(String(decoding: lit, as: UTF8.self))); lit = [] }
                let pos = lexer.pos
                lexer.advance(); lexer.advance()
                let e = try parseExpr()
                try lexer.skipTrivia(newlines: true)
                guard lexer.peekByte() == UInt8(ascii: "}") else {
                    throw lexer.pos.error("expected \"}\" to close the ${ at line \(pos.line), column \(pos.column)")
                }
                lexer.advance()
                parts.append(.interpolation(e))
                continue
            }
            lit.append(b)
            lexer.advance()
        }
        if !lit.isEmpty { parts.append(.literal(String(decoding: lit, as: UTF8.self))) }
        return parts
    }
}

/// JSON text as Go's encoding/json writes it, which is what `buildx bake --print` shows: map keys
/// sorted, `<`, `>` and `&` escaped as \u003c, \u003e, \u0026 (Go's HTML-safe default), and
/// two-space indentation from json.MarshalIndent.
enum GoJSON {

    static func quote(_ s: String, escapeHTML: Bool = true) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{8}": out += "\\b"
            case "\u{C}": out += "\\f"
            case "<" where escapeHTML, ">" where escapeHTML, "&" where escapeHTML, "\u{2028}", "\u{2029}":
                out += String(format: "\\u%04x", u.value)
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    static func write(_ v: GoValue, indent: String = "", into out: inout String) {
        switch v {
        case .string(let s): out += quote(s)
        case .bool(let b): out += b ? "true" : "false"
        case .number(let d): out += HCLValue.formatNumber(d)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "[\n"
            for (i, item) in items.enumerated() {
                out += indent + "  "
                write(item, indent: indent + "  ", into: &out)
                out += i == items.count - 1 ? "\n" : ",\n"
            }
            out += indent + "]"
        case .object(let items):
            if items.isEmpty { out += "{}"; return }
            out += "{\n"
            for (i, field) in items.enumerated() {
                let (k, item) = (field.key, field.value)
                out += indent + "  " + quote(k) + ": "
                write(item, indent: indent + "  ", into: &out)
                out += i == items.count - 1 ? "\n" : ",\n"
            }
            out += indent + "}"
        }
    }

    static func sortedObject(_ m: [String: GoValue]) -> GoValue {
        .object(m.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }.map { GoField(key: $0, value: m[$0]!) })
    }
}

import Foundation

/// A JSON value to write the Go way.
indirect enum GoValue {
    case string(String), bool(Bool), number(Double)
    case array([GoValue])
    /// Keys in the order given (Go writes struct fields in declaration order, maps sorted).
    case object([GoField])
}


struct GoField {
    var key: String
    var value: GoValue
}
