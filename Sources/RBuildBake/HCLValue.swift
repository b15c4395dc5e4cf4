import Foundation

// The values an HCL expression evaluates to. HCL's own type system (cty) distinguishes lists,
// sets and tuples, maps and objects; bake files never need the difference, so a list and an
// object are enough here. Conversions follow cty's "convert" rules that gohcl applies when buildx
// decodes a target: a number or bool becomes a string where a string is wanted, and a string
// "true"/"false" or a numeral becomes a bool or number.

/// A position in a bake file: 1-based line and column (columns count Unicode scalars, as HCL's do).
struct SourcePos: Sendable, Equatable {
    var file: String
    var line: Int
    var column: Int

    func error(_ message: String) -> BakeError {
        BakeError(file: file, line: line, column: column, message)
    }
}

enum HCLValue: Equatable, Sendable {
    case null
    case string(String)
    case number(Double)
    case bool(Bool)
    case list([HCLValue])
    case object([String: HCLValue])

    var typeName: String {
        switch self {
        case .null: "null"
        case .string: "string"
        case .number: "number"
        case .bool: "bool"
        case .list: "list"
        case .object: "object"
        }
    }

    var isNull: Bool { if case .null = self { true } else { false } }

    /// cty's number-to-string conversion: integers without a fraction, others shortest form.
    static func formatNumber(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e15 { return String(Int64(d)) }
        return "\(d)"
    }

    /// The value as a string when it is a primitive (cty's conversion to string); nil otherwise.
    var asString: String? {
        switch self {
        case .string(let s): s
        case .number(let d): Self.formatNumber(d)
        case .bool(let b): b ? "true" : "false"
        default: nil
        }
    }

    var asNumber: Double? {
        switch self {
        case .number(let d): d
        case .string(let s): Double(s.trimmingCharacters(in: .whitespaces))
        default: nil
        }
    }

    var asBool: Bool? {
        switch self {
        case .bool(let b): b
        case .string("true"): true
        case .string("false"): false
        default: nil
        }
    }

    /// JSON text of the value (for `--list=variables` and `jsonencode`-like displays).
    var jsonText: String {
        switch self {
        case .null: "null"
        case .string(let s): GoJSON.quote(s)
        case .number(let d): Self.formatNumber(d)
        case .bool(let b): b ? "true" : "false"
        case .list(let l): "[" + l.map(\.jsonText).joined(separator: ",") + "]"
        case .object(let o):
            "{" + o.keys.sorted().map { GoJSON.quote($0) + ":" + o[$0]!.jsonText }.joined(separator: ",") + "}"
        }
    }
}
