import Foundation

// Evaluation of expressions. HCL is declarative: a variable, top-level attribute or user function
// may be used above its definition, so globals are evaluated on first use and remembered, with the
// names being evaluated kept to refuse a cycle (buildx does the same in hclparser.resolveValue).

/// Names bound by a matrix, a function's parameters or a `for` expression.
typealias Scope = [String: HCLValue]

/// The declared type of a variable (`type = bool`): decides how its environment override is read.
enum VarType: Equatable {
    case any, string, number, bool, list, map
}

final class Evaluator {
    struct VariableDef {
        var name: String
        var defaultExpr: Expr?
        var type: VarType?
        var description: String?
        var pos: SourcePos
    }

    struct FunctionDef {
        var params: [String]
        var variadic: String?
        var result: Expr
        var pos: SourcePos
    }

    var variables: [String: VariableDef] = [:]
    var attributes: [String: Attribute] = [:]
    var functions: [String: FunctionDef] = [:]
    /// Values buildx defines itself (BAKE_CMD_CONTEXT, BAKE_LOCAL_PLATFORM); never overridden.
    var builtins: [String: String] = [:]
    let environment: [String: String]
    /// `target.NAME.attr` and `group.NAME.attr`: answered by the bake reader.
    var blockReference: ((_ type: String, _ name: String, _ attr: String?, _ pos: SourcePos) throws -> HCLValue)?
    var blockTypes: Set<String> = ["target", "group"]
    let now: () -> Date

    private var resolved: [String: HCLValue] = [:]
    private var resolving: [String] = []
    private var callDepth = 0
    /// Evaluations in progress, one inside the other: the parser bounds an expression's nesting,
    /// but calls multiply it (a function whose result nests 60 lists around a call of itself,
    /// 100 calls deep, overflowed the stack), so evaluation has a bound of its own.
    private var evalDepth = 0
    static let maxEvalDepth = 512

    init(environment: [String: String], now: @escaping () -> Date = Date.init) {
        self.environment = environment
        self.now = now
    }

    // MARK: globals

    func global(_ name: String, at pos: SourcePos) throws -> HCLValue {
        if let v = resolved[name] { return v }
        if let b = builtins[name] { return .string(b) }
        if resolving.contains(name) {
            throw pos.error("variable cycle: \((resolving.drop { $0 != name } + [name]).joined(separator: " → ")): a value cannot depend on itself")
        }
        resolving.append(name)
        defer { resolving.removeLast() }
        let value: HCLValue
        if let attr = attributes[name] {
            value = try eval(attr.expr, [:])
        } else if let def = variables[name] {
            value = try variableValue(def)
        } else {
            let known = (Array(variables.keys) + Array(attributes.keys)).sorted()
            throw pos.error("unknown variable \"\(name)\"" + (known.isEmpty ? "" : " (defined: \(known.joined(separator: ", ")))")
                + "; bake refers to variables by bare name, as ${NAME}")
        }
        resolved[name] = value
        return value
    }

    /// A `variable` block's value: its default, or the environment variable of the same name read
    /// with the variable's type (declared, else its default's), as buildx's resolveValue does.
    private func variableValue(_ def: VariableDef) throws -> HCLValue {
        var value: HCLValue = def.type == nil ? .string("") : .null
        if let d = def.defaultExpr {
            value = try eval(d, [:])
            if let t = def.type { value = try convert(value, to: t, at: d.pos, what: "the default of variable \"\(def.name)\"") }
        }
        guard let env = environment[def.name] else { return value }
        let p = def.pos
        switch def.type {
        case .string?: return .string(env)
        case .bool?: return try Self.parseBool(env, def.name, p)
        case .number?: return try Self.parseNumber(env, def.name, p)
        case .list?: return .list(try CSV.fields(env, p).map { .string($0) })
        case .map?:
            var m: [String: HCLValue] = [:]
            for field in try CSV.fields(env, p) {
                guard let eq = field.firstIndex(of: "=") else {
                    throw p.error("variable \(def.name): \(field) in the environment is not KEY=VALUE (a map is read as k=v,k2=v2)")
                }
                m[String(field[..<eq])] = .string(String(field[field.index(after: eq)...]))
            }
            return .object(m)
        case .any?, nil:
            switch value {
            case .null, .string: return .string(env)
            case .bool: return try Self.parseBool(env, def.name, p)
            case .number: return try Self.parseNumber(env, def.name, p)
            case .list, .object:
                throw p.error("variable \(def.name) has a \(value.typeName) default, which an environment value cannot override: declare its type (type = list(string)) to read it as CSV")
            }
        }
    }

    /// Go's strconv.ParseBool, which buildx uses for a bool variable's environment value.
    static func parseBool(_ s: String, _ name: String, _ pos: SourcePos) throws -> HCLValue {
        switch s {
        case "1", "t", "T", "TRUE", "true", "True": return .bool(true)
        case "0", "f", "F", "FALSE", "false", "False": return .bool(false)
        default: throw pos.error("variable \(name) is a bool, but the environment sets it to \"\(s)\" (use true or false)")
        }
    }

    static func parseNumber(_ s: String, _ name: String, _ pos: SourcePos) throws -> HCLValue {
        guard let d = Double(s), d.isFinite else {
            throw pos.error("variable \(name) is a number, but the environment sets it to \"\(s)\"")
        }
        return .number(d)
    }

    func convert(_ v: HCLValue, to t: VarType, at pos: SourcePos, what: String) throws -> HCLValue {
        if v.isNull { return v }
        switch t {
        case .any: return v
        case .string: if let s = v.asString { return .string(s) }
        case .number: if let d = v.asNumber { return .number(d) }
        case .bool: if let b = v.asBool { return .bool(b) }
        case .list: if case .list = v { return v }
        case .map: if case .object = v { return v }
        }
        throw pos.error("\(what) is a \(v.typeName), not the declared \(t)")
    }

    // MARK: expressions

    func eval(_ e: Expr, _ scope: Scope) throws -> HCLValue {
        evalDepth += 1
        defer { evalDepth -= 1 }
        guard evalDepth <= Self.maxEvalDepth else {
            throw e.pos.error("evaluation nested more than \(Self.maxEvalDepth) levels deep (expressions inside function calls inside expressions…): is a function calling itself?")
        }
        switch e.kind {
        case .literal(let v):
            return v
        case .template(let parts):
            if parts.count == 1, case .interpolation(let inner) = parts[0] {
                // "${x}" alone is x itself, not its text (HCL's rule), so a list stays a list.
                return try eval(inner, scope)
            }
            var s = ""
            for part in parts {
                switch part {
                case .literal(let l): s += l
                case .interpolation(let inner):
                    let v = try eval(inner, scope)
                    guard let t = v.asString else {
                        throw inner.pos.error(v.isNull
                            ? "cannot interpolate null into a string"
                            : "cannot interpolate a \(v.typeName) into a string (use join() for a list)")
                    }
                    s += t
                }
            }
            return .string(s)
        case .variable(let name):
            if let v = scope[name] { return v }
            if blockTypes.contains(name) {
                throw e.pos.error("\(name) alone is not a value: refer to an attribute, as \(name).NAME.ATTR")
            }
            return try global(name, at: e.pos)
        case .tuple(let items):
            return .list(try items.map { try eval($0, scope) })
        case .object(let items):
            var m: [String: HCLValue] = [:]
            for (k, v) in items {
                let key = try eval(k, scope)
                guard let ks = key.asString else {
                    throw k.pos.error("an object key must be a string, not a \(key.typeName)")
                }
                m[ks] = try eval(v, scope)
            }
            return .object(m)
        case .getAttr(let base, let name):
            if let (type, block) = blockRoot(base, scope) {
                return try blockReference?(type, block, name, e.pos) ?? .null
            }
            if case .variable(let type) = base.kind, scope[type] == nil, blockTypes.contains(type) {
                return try blockReference?(type, name, nil, e.pos) ?? .null
            }
            let v = try eval(base, scope)
            return try Self.attribute(v, name, e.pos)
        case .index(let base, let keyExpr):
            if case .variable(let type) = base.kind, scope[type] == nil, blockTypes.contains(type) {
                let key = try eval(keyExpr, scope)
                guard let name = key.asString else { throw keyExpr.pos.error("a \(type) name must be a string") }
                return try blockReference?(type, name, nil, e.pos) ?? .null
            }
            let v = try eval(base, scope)
            let key = try eval(keyExpr, scope)
            return try Self.index(v, key, keyExpr.pos)
        case .call(let name, let argExprs, let expandLast):
            var args = try argExprs.map { try eval($0, scope) }
            if expandLast, let last = args.popLast() {
                guard case .list(let rest) = last else {
                    throw argExprs.last!.pos.error("only a list can be expanded with ... in a call to \(name)()")
                }
                args += rest
            }
            return try call(name, args, e.pos)
        case .not(let inner):
            let v = try eval(inner, scope)
            guard let b = v.asBool else { throw inner.pos.error("! needs a bool, not a \(v.typeName)") }
            return .bool(!b)
        case .negate(let inner):
            let v = try eval(inner, scope)
            guard let d = v.asNumber else { throw inner.pos.error("unary - needs a number, not a \(v.typeName)") }
            return .number(-d)
        case .binary(let op, let l, let r):
            return try binary(op, l, r, scope)
        case .conditional(let c, let a, let b):
            let cv = try eval(c, scope)
            guard let cb = cv.asBool else {
                throw c.pos.error("the condition of ? : must be a bool, not a \(cv.typeName)")
            }
            return try eval(cb ? a : b, scope)
        case .forExpr(let keyVar, let valueVar, let collExpr, let keyExpr, let valueExpr, let cond):
            let coll = try eval(collExpr, scope)
            var pairs: [(HCLValue, HCLValue)] = []
            switch coll {
            case .list(let l): pairs = l.enumerated().map { (.number(Double($0.offset)), $0.element) }
            case .object(let o): pairs = o.keys.sorted().map { (.string($0), o[$0]!) }
            default: throw collExpr.pos.error("a for expression iterates over a list or object, not a \(coll.typeName)")
            }
            var list: [HCLValue] = []
            var obj: [String: HCLValue] = [:]
            for (k, v) in pairs {
                var inner = scope
                if let kv = keyVar { inner[kv] = k }
                inner[valueVar] = v
                if let c = cond {
                    let cv = try eval(c, inner)
                    guard let keep = cv.asBool else { throw c.pos.error("the if of a for expression must be a bool") }
                    if !keep { continue }
                }
                let value = try eval(valueExpr, inner)
                if let ke = keyExpr {
                    let key = try eval(ke, inner)
                    guard let ks = key.asString else { throw ke.pos.error("a for expression's key must be a string") }
                    if obj[ks] != nil {
                        throw ke.pos.error("duplicate key \"\(ks)\" in a for expression (grouping with ... is not supported)")
                    }
                    obj[ks] = value
                } else {
                    list.append(value)
                }
            }
            return keyExpr == nil ? .list(list) : .object(obj)
        }
    }

    /// `target.NAME` or `target["NAME"]` as the base of an attribute access.
    private func blockRoot(_ base: Expr, _ scope: Scope) -> (String, String)? {
        switch base.kind {
        case .getAttr(let root, let name):
            if case .variable(let type) = root.kind, scope[type] == nil, blockTypes.contains(type) { return (type, name) }
        case .index(let root, let key):
            if case .variable(let type) = root.kind, scope[type] == nil, blockTypes.contains(type),
               case .literal(let k) = key.kind, let name = k.asString {
                return (type, name)
            }
        default: break
        }
        return nil
    }

    static func attribute(_ v: HCLValue, _ name: String, _ pos: SourcePos) throws -> HCLValue {
        guard case .object(let o) = v else {
            throw pos.error("cannot read attribute \"\(name)\" of a \(v.typeName)")
        }
        guard let r = o[name] else {
            throw pos.error("the object has no attribute \"\(name)\" (it has: \(o.keys.sorted().joined(separator: ", ")))")
        }
        return r
    }

    static func index(_ v: HCLValue, _ key: HCLValue, _ pos: SourcePos) throws -> HCLValue {
        switch v {
        case .list(let l):
            guard let d = key.asNumber, d == d.rounded() else {
                throw pos.error("a list index must be a whole number, not \(key.jsonText)")
            }
            guard d >= 0, d < Double(l.count) else {
                throw pos.error("index \(HCLValue.formatNumber(d)) is out of range: the list has \(l.count) elements")
            }
            return l[Int(d)]
        case .object(let o):
            guard let k = key.asString else { throw pos.error("an object key must be a string, not a \(key.typeName)") }
            guard let r = o[k] else { throw pos.error("the object has no key \"\(k)\"") }
            return r
        default:
            throw pos.error("cannot index a \(v.typeName)")
        }
    }

    private func binary(_ op: BinaryOp, _ l: Expr, _ r: Expr, _ scope: Scope) throws -> HCLValue {
        let lv = try eval(l, scope)
        switch op {
        case .and, .or:
            // Both sides are evaluated in HCL (no short circuit), but the result is the same.
            guard let lb = lv.asBool else { throw l.pos.error("\(op.rawValue) needs bools, not a \(lv.typeName)") }
            let rv = try eval(r, scope)
            guard let rb = rv.asBool else { throw r.pos.error("\(op.rawValue) needs bools, not a \(rv.typeName)") }
            return .bool(op == .and ? lb && rb : lb || rb)
        case .eq: return .bool(lv == (try eval(r, scope)))
        case .ne: return .bool(lv != (try eval(r, scope)))
        default: break
        }
        let rv = try eval(r, scope)
        guard let a = lv.asNumber else { throw l.pos.error("\(op.rawValue) needs numbers, not a \(lv.typeName) (\(lv.jsonText))") }
        guard let b = rv.asNumber else { throw r.pos.error("\(op.rawValue) needs numbers, not a \(rv.typeName) (\(rv.jsonText))") }
        switch op {
        case .add: return .number(a + b)
        case .sub: return .number(a - b)
        case .mul: return .number(a * b)
        case .div:
            guard b != 0 else { throw r.pos.error("division by zero") }
            return .number(a / b)
        case .mod:
            guard b != 0 else { throw r.pos.error("modulo by zero") }
            return .number(a.truncatingRemainder(dividingBy: b))
        case .lt: return .bool(a < b)
        case .le: return .bool(a <= b)
        case .gt: return .bool(a > b)
        case .ge: return .bool(a >= b)
        default: fatalError("handled above")
        }
    }

    // MARK: calls

    func call(_ name: String, _ args: [HCLValue], _ pos: SourcePos) throws -> HCLValue {
        if let f = functions[name] {
            guard args.count == f.params.count || (f.variadic != nil && args.count >= f.params.count) else {
                throw pos.error("function \(name) takes \(f.params.count)\(f.variadic == nil ? "" : " or more") arguments, given \(args.count)")
            }
            callDepth += 1
            defer { callDepth -= 1 }
            guard callDepth < 100 else {
                throw pos.error("function \(name) calls itself too deeply (recursion is not allowed, as in buildx)")
            }
            var scope: Scope = [:]
            for (i, p) in f.params.enumerated() { scope[p] = args[i] }
            if let v = f.variadic { scope[v] = .list(Array(args[f.params.count...])) }
            return try eval(f.result, scope)
        }
        guard let builtin = HCLFunctions.table[name] else {
            throw pos.error("unknown function \(name)()")
        }
        return try builtin(FunctionCall(name: name, args: args, pos: pos, now: now))
    }
}

/// A small CSV reader (the `encoding/csv` rules buildx reads list variables with): commas
/// separate, double quotes group, `""` is a quote.
enum CSV {
    static func fields(_ s: String, _ pos: SourcePos) throws -> [String] {
        if s.isEmpty { return [] }
        var out: [String] = []
        var cur = ""
        var inQuotes = false
        var chars = Array(s)[...]
        while let c = chars.popFirst() {
            if inQuotes {
                if c == "\"" {
                    if chars.first == "\"" { cur.append("\""); chars = chars.dropFirst() } else { inQuotes = false }
                } else { cur.append(c) }
            } else if c == "\"" && cur.isEmpty {
                inQuotes = true
            } else if c == "," {
                out.append(cur)
                cur = ""
            } else {
                cur.append(c)
            }
        }
        if inQuotes { throw pos.error("unterminated quote in the CSV value \(s)") }
        out.append(cur)
        return out
    }
}
