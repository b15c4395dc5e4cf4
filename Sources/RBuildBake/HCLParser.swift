// Recursive descent over HCL's native syntax: a body is attributes (`name = expr`, one per line)
// and blocks (`type "label" { body }`); expressions follow the precedence in HCL's spec
// (https://github.com/hashicorp/hcl/blob/main/hclsyntax/spec.md#operations):
// `? :` < `||` < `&&` < `== !=` < `< <= > >=` < `+ -` < `* / %` < unary `! -` < `.attr [index]`.

struct HCLParser {
    var lexer: Lexer
    /// Whether newlines are insignificant here: true inside (), [] and ${}, false in bodies and objects.
    private var skipNewlines: [Bool] = [false]
    /// How many expressions (or blocks) the one being read is inside: recursive descent takes stack
    /// for each level, so thousands of `(` or `[` would overflow it. Real bake files nest a few.
    private var depth = 0
    static let maxDepth = 64

    init(file: String, bytes: [UInt8]) {
        lexer = Lexer(file: file, bytes: bytes)
    }

    static func parse(file: String, bytes: [UInt8]) throws -> Body {
        var p = HCLParser(file: file, bytes: bytes)
        return try p.parseBody(topLevel: true)
    }

    // MARK: tokens

    private mutating func next() throws -> (Token, SourcePos) {
        try lexer.next(newlines: skipNewlines.last!)
    }

    private mutating func peek() throws -> (Token, SourcePos) {
        let saved = lexer
        defer { lexer = saved }
        return try next()
    }

    private mutating func expect(_ p: String, _ context: String) throws -> SourcePos {
        let (t, pos) = try next()
        guard t == .punct(p) else {
            throw pos.error("expected \"\(p)\" \(context), found \(t.display)")
        }
        return pos
    }

    /// One level deeper (an expression, a `!`/`-` operand, a block), refused past `maxDepth`.
    private mutating func nested<T>(_ what: String, _ body: (inout HCLParser) throws -> T) throws -> T {
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maxDepth {
            let (_, pos) = try peek()
            throw pos.error("\(what) nested more than \(Self.maxDepth) levels deep: bake files here nest at most \(Self.maxDepth) expressions or blocks")
        }
        return try body(&self)
    }

    private mutating func withNewlines<T>(skipped: Bool, _ body: (inout HCLParser) throws -> T) rethrows -> T {
        skipNewlines.append(skipped)
        defer { skipNewlines.removeLast() }
        return try body(&self)
    }

    // MARK: bodies

    mutating func parseBody(topLevel: Bool) throws -> Body {
        var body = Body()
        while true {
            let (t, pos) = try next()
            switch t {
            case .newline:
                continue
            case .eof:
                if topLevel { return body }
                throw pos.error("unexpected end of file: a block is not closed with }")
            case .punct("}") where !topLevel:
                return body
            case .ident(let name):
                let (t2, pos2) = try peek()
                if t2 == .punct("=") {
                    _ = try next()
                    let expr = try parseExpr()
                    if let dup = body.attribute(name) {
                        throw pos.error("attribute \"\(name)\" is already set on line \(dup.pos.line): set it once")
                    }
                    body.attributes.append(Attribute(name: name, expr: expr, pos: pos))
                    try endOfItem(topLevel: topLevel, what: "the value of \"\(name)\"")
                    if !topLevel, case (.punct("}"), _) = try peek() { _ = try next(); return body }
                    continue
                }
                var labels: [String] = []
                var (lt, lpos) = (t2, pos2)
                while lt != .punct("{") {
                    switch lt {
                    case .quote:
                        _ = try next()
                        let parts = try parseTemplate(quoted: true)
                        guard let s = Self.plainString(parts) else {
                            throw lpos.error("a block label cannot contain ${…} interpolation")
                        }
                        labels.append(s)
                    case .ident(let s):
                        _ = try next()
                        labels.append(s)
                    default:
                        throw lpos.error("expected \"=\" or a block after \"\(name)\", found \(lt.display)")
                    }
                    (lt, lpos) = try peek()
                }
                _ = try next()
                let inner = try nested("a block") { p in try p.withNewlines(skipped: false) { try $0.parseBody(topLevel: false) } }
                body.blocks.append(Block(type: name, labels: labels, body: inner, pos: pos))
                try endOfItem(topLevel: topLevel, what: "a block")
                if !topLevel, case (.punct("}"), _) = try peek() { _ = try next(); return body }
            default:
                throw pos.error("expected an attribute name or a block, found \(t.display)")
            }
        }
    }

    /// An attribute or block ends its line (or the one-line block it is in).
    private mutating func endOfItem(topLevel: Bool, what: String) throws {
        let (t, pos) = try peek()
        switch t {
        case .newline: _ = try next()
        case .eof: return
        case .punct("}") where !topLevel: return
        default: throw pos.error("unexpected \(t.display) after \(what): put each attribute on its own line")
        }
    }

    static func plainString(_ parts: [TemplatePart]) -> String? {
        var s = ""
        for part in parts {
            guard case .literal(let l) = part else { return nil }
            s += l
        }
        return s
    }

    // MARK: expressions

    mutating func parseExpr() throws -> Expr {
        try nested("an expression") { try $0.parseConditional() }
    }

    private mutating func parseConditional() throws -> Expr {
        let cond = try parseBinary(0)
        if case (.punct("?"), _) = try peek() {
            _ = try next()
            let a = try parseExpr()
            _ = try expect(":", "in a conditional (cond ? a : b)")
            let b = try parseExpr()
            return Expr(.conditional(cond, a, b), cond.pos)
        }
        return cond
    }

    private static let levels: [[String]] = [["||"], ["&&"], ["==", "!="], ["<", "<=", ">", ">="], ["+", "-"], ["*", "/", "%"]]

    private mutating func parseBinary(_ level: Int) throws -> Expr {
        if level == Self.levels.count { return try parseUnary() }
        var lhs = try parseBinary(level + 1)
        while case (.punct(let p), _) = try peek(), Self.levels[level].contains(p) {
            _ = try next()
            let rhs = try parseBinary(level + 1)
            lhs = Expr(.binary(BinaryOp(rawValue: p)!, lhs, rhs), lhs.pos)
        }
        return lhs
    }

    private mutating func parseUnary() throws -> Expr {
        let (t, pos) = try peek()
        if t == .punct("!") {
            _ = try next()
            return Expr(.not(try nested("an operand of !") { try $0.parseUnary() }), pos)
        }
        if t == .punct("-") {
            _ = try next()
            return Expr(.negate(try nested("an operand of -") { try $0.parseUnary() }), pos)
        }
        return try parsePostfix()
    }

    private mutating func parsePostfix() throws -> Expr {
        var e = try parsePrimary()
        while true {
            // A newline ends the expression in a body, so peek with the current mode.
            let (t, pos) = try peek()
            if t == .punct(".") {
                _ = try next()
                let (n, npos) = try next()
                switch n {
                case .ident(let name): e = Expr(.getAttr(e, name), pos)
                case .number(let d): e = Expr(.index(e, Expr(.literal(.number(d)), npos)), pos)
                default: throw npos.error("expected an attribute name after \".\", found \(n.display)")
                }
            } else if t == .punct("[") {
                _ = try next()
                let key = try withNewlines(skipped: true) { p in
                    let k = try p.parseExpr()
                    _ = try p.expect("]", "to close the index")
                    return k
                }
                e = Expr(.index(e, key), pos)
            } else {
                return e
            }
        }
    }

    private mutating func parsePrimary() throws -> Expr {
        let (t, pos) = try next()
        switch t {
        case .number(let d):
            return Expr(.literal(.number(d)), pos)
        case .quote:
            return Self.templateExpr(try parseTemplate(quoted: true), pos)
        case .heredoc(let marker, let flush):
            return Self.templateExpr(try parseHeredoc(marker: marker, flush: flush, start: pos), pos)
        case .ident("true"): return Expr(.literal(.bool(true)), pos)
        case .ident("false"): return Expr(.literal(.bool(false)), pos)
        case .ident("null"): return Expr(.literal(.null), pos)
        case .ident(let name):
            if case (.punct("("), _) = try peek() {
                _ = try next()
                return try withNewlines(skipped: true) { try $0.parseCall(name, pos) }
            }
            return Expr(.variable(name), pos)
        case .punct("("):
            return try withNewlines(skipped: true) { p in
                let e = try p.parseExpr()
                _ = try p.expect(")", "to close the parenthesis")
                return e
            }
        case .punct("["):
            return try withNewlines(skipped: true) { try $0.parseTuple(pos) }
        case .punct("{"):
            return try withNewlines(skipped: false) { try $0.parseObject(pos) }
        default:
            throw pos.error("expected an expression, found \(t.display)")
        }
    }

    static func templateExpr(_ parts: [TemplatePart], _ pos: SourcePos) -> Expr {
        if let s = plainString(parts) { return Expr(.literal(.string(s)), pos) }
        return Expr(.template(parts), pos)
    }

    private mutating func parseCall(_ name: String, _ pos: SourcePos) throws -> Expr {
        var args: [Expr] = []
        var expand = false
        if case (.punct(")"), _) = try peek() {
            _ = try next()
            return Expr(.call(name, [], expandLast: false), pos)
        }
        while true {
            args.append(try parseExpr())
            let (t, tpos) = try next()
            switch t {
            case .punct(","):
                if case (.punct(")"), _) = try peek() { _ = try next(); return Expr(.call(name, args, expandLast: expand), pos) }
            case .punct("..."):
                expand = true
                _ = try expect(")", "after ... (only the last argument can be expanded)")
                return Expr(.call(name, args, expandLast: expand), pos)
            case .punct(")"):
                return Expr(.call(name, args, expandLast: expand), pos)
            default:
                throw tpos.error("expected \",\" or \")\" in the arguments of \(name)(), found \(t.display)")
            }
        }
    }

    private mutating func parseTuple(_ pos: SourcePos) throws -> Expr {
        if case (.ident("for"), _) = try peek() {
            return try parseFor(pos, object: false)
        }
        var items: [Expr] = []
        while true {
            if case (.punct("]"), _) = try peek() { _ = try next(); break }
            items.append(try parseExpr())
            let (t, tpos) = try next()
            if t == .punct("]") { break }
            guard t == .punct(",") else {
                throw tpos.error("expected \",\" or \"]\" in a list, found \(t.display)")
            }
        }
        return Expr(.tuple(items), pos)
    }

    private mutating func parseObject(_ pos: SourcePos) throws -> Expr {
        // `{for …}` is an object for-expression; newlines inside it mean nothing.
        let saved = lexer
        if case (.ident("for"), _) = try lexer.next(newlines: true) {
            let (after, _) = try peek()
            if case .ident = after {
                lexer = saved
                return try withNewlines(skipped: true) { try $0.parseFor(pos, object: true) }
            }
        }
        lexer = saved
        var items: [(key: Expr, value: Expr)] = []
        while true {
            let (t, tpos) = try next()
            switch t {
            case .newline, .punct(","):
                continue
            case .punct("}"):
                return Expr(.object(items), pos)
            case .ident(let name):
                // A bare name is the key itself, never a variable (HCL's rule; parenthesize for one).
                items.append((Expr(.literal(.string(name)), tpos), try parseObjectValue()))
            case .quote:
                let key = Self.templateExpr(try parseTemplate(quoted: true), tpos)
                items.append((key, try parseObjectValue()))
            case .number(let d):
                items.append((Expr(.literal(.string(HCLValue.formatNumber(d))), tpos), try parseObjectValue()))
            case .punct("("):
                let key = try withNewlines(skipped: true) { p in
                    let k = try p.parseExpr()
                    _ = try p.expect(")", "to close the parenthesized key")
                    return k
                }
                items.append((key, try parseObjectValue()))
            default:
                throw tpos.error("expected a key or \"}\" in an object, found \(t.display)")
            }
            let (sep, spos) = try peek()
            switch sep {
            case .newline, .punct(","), .punct("}"): continue
            default: throw spos.error("expected \",\", a newline or \"}\" after an object item, found \(sep.display)")
            }
        }
    }

    private mutating func parseObjectValue() throws -> Expr {
        let (t, pos) = try next()
        guard t == .punct("=") || t == .punct(":") else {
            throw pos.error("expected \"=\" or \":\" after an object key, found \(t.display)")
        }
        return try withNewlines(skipped: true) { try $0.parseExpr() }
    }

    /// After `[` or `{`: `for k, v in coll : …`.
    private mutating func parseFor(_ pos: SourcePos, object: Bool) throws -> Expr {
        _ = try next() // for
        guard case (.ident(let first), _) = try next() else {
            throw pos.error("expected a variable name after \"for\"")
        }
        var keyVar: String?
        var valueVar = first
        if case (.punct(","), _) = try peek() {
            _ = try next()
            guard case (.ident(let second), _) = try next() else {
                throw pos.error("expected a second variable name after \",\" in a for expression")
            }
            keyVar = first
            valueVar = second
        }
        let (inTok, inPos) = try next()
        guard inTok == .ident("in") else { throw inPos.error("expected \"in\" in a for expression, found \(inTok.display)") }
        let coll = try parseExpr()
        _ = try expect(":", "after the collection of a for expression")
        var keyExpr: Expr?
        var valueExpr = try parseExpr()
        if object {
            _ = try expect("=>", "between key and value of an object for expression")
            keyExpr = valueExpr
            valueExpr = try parseExpr()
        }
        var cond: Expr?
        if case (.ident("if"), _) = try peek() {
            _ = try next()
            cond = try parseExpr()
        }
        _ = try expect(object ? "}" : "]", "to close the for expression")
        return Expr(.forExpr(keyVar: keyVar, valueVar: valueVar, collection: coll, keyExpr: keyExpr, valueExpr: valueExpr, condition: cond), pos)
    }

    // MARK: templates

    /// The rest of a quoted string (the `"` already read): literals with escapes, `${…}`.
    mutating func parseTemplate(quoted: Bool) throws -> [TemplatePart] {
        var parts: [TemplatePart] = []
        var lit: [UInt8] = []
        func flush() {
            if !lit.isEmpty { parts.append(.literal(String(decoding: lit, as: UTF8.self))) }
            lit = []
        }
        let start = lexer.pos
        while true {
            guard let b = lexer.peekByte() else {
                throw start.error("unterminated string: close it with \"")
            }
            if b == UInt8(ascii: "\"") {
                lexer.advance()
                flush()
                return parts
            }
            if b == UInt8(ascii: "\n") {
                throw lexer.pos.error("unterminated string: a quoted string cannot span lines (use a heredoc, <<EOT)")
            }
            if b == UInt8(ascii: "\\") {
                let epos = lexer.pos
                lexer.advance()
                guard let e = lexer.peekByte() else { throw epos.error("unterminated string") }
                lexer.advance()
                switch e {
                case UInt8(ascii: "n"): lit.append(0x0A)
                case UInt8(ascii: "t"): lit.append(0x09)
                case UInt8(ascii: "r"): lit.append(0x0D)
                case UInt8(ascii: "\""): lit.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): lit.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "u"), UInt8(ascii: "U"):
                    let n = e == UInt8(ascii: "u") ? 4 : 8
                    var hex = ""
                    for _ in 0..<n {
                        guard let h = lexer.peekByte() else { break }
                        hex.append(Character(UnicodeScalar(h)))
                        lexer.advance()
                    }
                    guard hex.count == n, let v = UInt32(hex, radix: 16), let scalar = UnicodeScalar(v) else {
                        throw epos.error("invalid \\\(Character(UnicodeScalar(e))) escape: it needs \(n) hex digits of a Unicode code point")
                    }
                    lit.append(contentsOf: Array(String(scalar).utf8))
                default:
                    throw epos.error("invalid escape \\\(Character(UnicodeScalar(e))) in a string (valid: \\n \\t \\r \\\" \\\\ \\uNNNN)")
                }
                continue
            }
            if try templateSpecial(&parts, &lit) { continue }
            lit.append(b)
            lexer.advance()
        }
    }

    /// `$${` and `%%{` escapes, `${…}` interpolations; true when one was consumed.
    private mutating func templateSpecial(_ parts: inout [TemplatePart], _ lit: inout [UInt8]) throws -> Bool {
        if lexer.matches("$${") || lexer.matches("%%{") {
            lit.append(lexer.bytes[lexer.offset])
            lexer.advance()
            lexer.advance()
            lit.append(UInt8(ascii: "{"))
            lexer.advance()
            return true
        }
        if lexer.matches("%{") {
            throw lexer.pos.error("template directives (%{if}, %{for}) are not supported in bake files here; write %%{ for a literal %{")
        }
        if lexer.matches("${") {
            let pos = lexer.pos
            lexer.advance()
            lexer.advance()
            if !lit.isEmpty { parts.append(.literal(String(decoding: lit, as: UTF8.self))) }
            lit = []
            let e = try withNewlines(skipped: true) { p in
                let e = try p.parseExpr()
                let (t, tpos) = try p.next()
                guard t == .punct("}") else {
                    throw tpos.error("expected \"}\" to close the ${ at line \(pos.line), column \(pos.column), found \(t.display)")
                }
                return e
            }
            parts.append(.interpolation(e))
            return true
        }
        return false
    }

    /// A heredoc's lines up to the one holding only its marker. With `<<-` the smallest
    /// indentation of the non-blank lines is removed from every line, as HCL does.
    mutating func parseHeredoc(marker: String, flush flushIndent: Bool, start: SourcePos) throws -> [TemplatePart] {
        // Find the closing line first: it bounds the template and gives the indentation.
        var lineStarts: [Int] = []
        var i = lexer.offset
        var end = -1
        var afterEnd = -1
        while i <= lexer.bytes.count {
            var j = i
            while j < lexer.bytes.count, lexer.bytes[j] != UInt8(ascii: "\n") { j += 1 }
            let line = String(decoding: lexer.bytes[i..<j], as: UTF8.self)
            if line.trimmingCharacters(in: .whitespaces) == marker {
                end = i
                afterEnd = j
                break
            }
            lineStarts.append(i)
            if j >= lexer.bytes.count { break }
            i = j + 1
        }
        guard end >= 0 else {
            throw start.error("unterminated heredoc: no line holding only \(marker) closes it")
        }
        var indent = 0
        if flushIndent {
            indent = Int.max
            for s in lineStarts {
                var k = s
                while k < end, lexer.bytes[k] == UInt8(ascii: " ") || lexer.bytes[k] == UInt8(ascii: "\t") { k += 1 }
                if k < end, lexer.bytes[k] != UInt8(ascii: "\n") { indent = min(indent, k - s) }
            }
            if indent == Int.max { indent = 0 }
        }
        var parts: [TemplatePart] = []
        var lit: [UInt8] = []
        func flush() {
            if !lit.isEmpty { parts.append(.literal(String(decoding: lit, as: UTF8.self))) }
            lit = []
        }
        var atLineStart = true
        while lexer.offset < end {
            if atLineStart {
                atLineStart = false
                var n = 0
                while n < indent, let b = lexer.peekByte(), b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") {
                    lexer.advance()
                    n += 1
                }
                continue
            }
            if try templateSpecial(&parts, &lit) { continue }
            let b = lexer.bytes[lexer.offset]
            lit.append(b)
            lexer.advance()
            if b == UInt8(ascii: "\n") { atLineStart = true }
        }
        flush()
        while lexer.offset < afterEnd { lexer.advance() }
        return parts
    }
}

import Foundation
