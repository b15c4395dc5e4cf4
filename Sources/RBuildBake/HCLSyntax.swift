// The syntax tree of HCL's native syntax, the subset bake files use. There is no HCL library
// for Swift (HashiCorp's is Go, and buildx links it), so RBuildBake has its own lexer
// (HCLLexer.swift), recursive-descent parser (HCLParser.swift) and evaluator (HCLEval.swift).
// JSON bake files (BakeJSON.swift) produce the same tree, as HCL's JSON syntax does.

/// One expression with where it starts.
final class Expr: Sendable {
    let kind: ExprKind
    let pos: SourcePos
    init(_ kind: ExprKind, _ pos: SourcePos) {
        self.kind = kind
        self.pos = pos
    }
}

enum BinaryOp: String, Sendable {
    case or = "||", and = "&&", eq = "==", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">="
    case add = "+", sub = "-", mul = "*", div = "/", mod = "%"
}

enum TemplatePart: Sendable {
    case literal(String)
    case interpolation(Expr)
}

enum ExprKind: Sendable {
    case literal(HCLValue)
    /// A quoted string or heredoc with `${…}` parts.
    case template([TemplatePart])
    case variable(String)
    case tuple([Expr])
    /// Keys are expressions: a bare identifier key is a literal string (HCL's rule).
    case object([(key: Expr, value: Expr)])
    case getAttr(Expr, String)
    case index(Expr, Expr)
    /// `f(a, b)`, or `f(a, list...)` when `expandLast`.
    case call(String, [Expr], expandLast: Bool)
    case not(Expr)
    case negate(Expr)
    case binary(BinaryOp, Expr, Expr)
    case conditional(Expr, Expr, Expr)
    /// `[for k, v in coll: value if cond]` (keyExpr nil) or `{for k, v in coll: key => value if cond}`.
    case forExpr(keyVar: String?, valueVar: String, collection: Expr, keyExpr: Expr?, valueExpr: Expr, condition: Expr?)
}

struct Attribute: Sendable {
    var name: String
    var expr: Expr
    var pos: SourcePos
}

final class Block: Sendable {
    let type: String
    let labels: [String]
    let body: Body
    let pos: SourcePos
    init(type: String, labels: [String], body: Body, pos: SourcePos) {
        self.type = type
        self.labels = labels
        self.body = body
        self.pos = pos
    }
}

struct Body: Sendable {
    var attributes: [Attribute] = []
    var blocks: [Block] = []

    func attribute(_ name: String) -> Attribute? { attributes.first { $0.name == name } }
}
