import Foundation

// The functions bake files call. Names and behaviour follow buildx's stdlib
// (bake/hclparser/stdlib.go, docs/bake-stdlib.md), which takes most of them from go-cty's
// function/stdlib: note that `index(coll, key)` is cty's element-by-key (not Terraform's
// position-of), `reverse` reverses a string (`reverselist` a list), and `replace` is a plain
// substring replacement. `tostring` and `tonumber` are Terraform's; buildx lacks them, so a file
// using them works here and not there.

struct FunctionCall {
    var name: String
    var args: [HCLValue]
    var pos: SourcePos
    var now: () -> Date

    func fail(_ message: String) -> BakeError { pos.error("\(name)(): \(message)") }

    func count(_ n: ClosedRange<Int>) throws {
        guard n.contains(args.count) else {
            let want = n.lowerBound == n.upperBound ? "\(n.lowerBound)" : "\(n.lowerBound) to \(n.upperBound)"
            throw fail("takes \(want) argument\(n.upperBound == 1 ? "" : "s"), given \(args.count)")
        }
    }
    func count(atLeast n: Int) throws {
        guard args.count >= n else { throw fail("takes at least \(n) argument\(n == 1 ? "" : "s"), given \(args.count)") }
    }
    func string(_ i: Int) throws -> String {
        guard let s = args[i].asString else { throw fail("argument \(i + 1) must be a string, not a \(args[i].typeName)") }
        return s
    }
    func number(_ i: Int) throws -> Double {
        guard let d = args[i].asNumber else { throw fail("argument \(i + 1) must be a number, not a \(args[i].typeName)") }
        return d
    }
    func int(_ i: Int) throws -> Int {
        let d = try number(i)
        guard d == d.rounded() else { throw fail("argument \(i + 1) must be a whole number, not \(d)") }
        // (Int(d) traps past Int's range: 1e300 and infinity are whole numbers too.)
        guard abs(d) <= 9_007_199_254_740_992 else {
            throw fail("argument \(i + 1) must be a whole number within ±2^53, not \(HCLValue.formatNumber(d))")
        }
        return Int(d)
    }
    func bool(_ i: Int) throws -> Bool {
        guard let b = args[i].asBool else { throw fail("argument \(i + 1) must be a bool, not a \(args[i].typeName)") }
        return b
    }
    func list(_ i: Int) throws -> [HCLValue] {
        guard case .list(let l) = args[i] else { throw fail("argument \(i + 1) must be a list, not a \(args[i].typeName)") }
        return l
    }
    func object(_ i: Int) throws -> [String: HCLValue] {
        guard case .object(let o) = args[i] else { throw fail("argument \(i + 1) must be a map or object, not a \(args[i].typeName)") }
        return o
    }
}

enum HCLFunctions {
    /// The widest field format() pads to, and its longest precision.
    static let maxFormatWidth = 10_000

    typealias Fn = @Sendable (FunctionCall) throws -> HCLValue

    static let table: [String: Fn] = [
        "equal": { c in try c.count(2...2); return .bool(c.args[0] == c.args[1]) },
        "notequal": { c in try c.count(2...2); return .bool(c.args[0] != c.args[1]) },
        "and": { c in try c.count(2...2); return .bool(try c.bool(0) && c.bool(1)) },
        "or": { c in try c.count(2...2); return .bool(try c.bool(0) || c.bool(1)) },
        "not": { c in try c.count(1...1); return .bool(!(try c.bool(0))) },

        "join": { c in
            try c.count(atLeast: 2)
            let sep = try c.string(0)
            var parts: [String] = []
            for i in 1..<c.args.count {
                for v in try c.list(i) {
                    guard let s = v.asString else { throw c.fail("list elements must be strings, not \(v.typeName)") }
                    parts.append(s)
                }
            }
            return .string(parts.joined(separator: sep))
        },
        "split": { c in
            try c.count(2...2)
            let sep = try c.string(0), s = try c.string(1)
            return .list(s.components(separatedBy: sep).map { .string($0) })
        },
        "lower": { c in try c.count(1...1); return .string(try c.string(0).lowercased()) },
        "upper": { c in try c.count(1...1); return .string(try c.string(0).uppercased()) },
        "title": { c in try c.count(1...1); return .string(try c.string(0).capitalized) },
        "trimprefix": { c in
            try c.count(2...2)
            let s = try c.string(0), p = try c.string(1)
            return .string(s.hasPrefix(p) ? String(s.dropFirst(p.count)) : s)
        },
        "trimsuffix": { c in
            try c.count(2...2)
            let s = try c.string(0), p = try c.string(1)
            return .string(s.hasSuffix(p) ? String(s.dropLast(p.count)) : s)
        },
        "trimspace": { c in try c.count(1...1); return .string(try c.string(0).trimmingCharacters(in: .whitespacesAndNewlines)) },
        "trim": { c in
            try c.count(2...2)
            return .string(try c.string(0).trimmingCharacters(in: CharacterSet(charactersIn: try c.string(1))))
        },
        "strlen": { c in try c.count(1...1); return .number(Double(try c.string(0).count)) },
        "substr": { c in
            try c.count(3...3)
            let s = Array(try c.string(0))
            var off = try c.int(1), len = try c.int(2)
            if off < 0 { off += s.count }
            off = max(0, min(off, s.count))
            if len < 0 || len > s.count - off { len = s.count - off }
            return .string(String(s[off..<off + len]))
        },
        "replace": { c in
            try c.count(3...3)
            return .string(try c.string(0).replacingOccurrences(of: c.string(1), with: c.string(2)))
        },
        "regex_replace": { c in
            try c.count(3...3)
            let s = try c.string(0)
            let re = try regex(c, try c.string(1))
            // Go's ${1} is NSRegularExpression's $1.
            let template = try c.string(2).replacingOccurrences(of: #"\$\{(\d+)\}"#, with: "\\$$1", options: .regularExpression)
            return .string(re.stringByReplacingMatches(in: s, range: NSRange(s.startIndex..., in: s), withTemplate: template))
        },
        "regex": { c in
            try c.count(2...2)
            let pattern = try c.string(0), s = try c.string(1)
            let re = try regex(c, pattern)
            guard let m = re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else {
                throw c.fail("the pattern \(pattern) does not match \"\(s)\"")
            }
            func group(_ r: NSRange) -> HCLValue {
                guard let range = Range(r, in: s) else { return .null }
                return .string(String(s[range]))
            }
            if m.numberOfRanges == 1 { return group(m.range) }
            let names = namedGroups(pattern)
            if !names.isEmpty {
                var o: [String: HCLValue] = [:]
                for n in names { o[n] = group(m.range(withName: n)) }
                return .object(o)
            }
            return .list((1..<m.numberOfRanges).map { group(m.range(at: $0)) })
        },
        "format": { c in
            try c.count(atLeast: 1)
            return .string(try format(c, try c.string(0), Array(c.args.dropFirst())))
        },
        "formatdate": { c in
            try c.count(2...2)
            return .string(try formatDate(c, try c.string(0), try c.string(1)))
        },
        "timestamp": { c in
            // As buildx: the current time, UTC, RFC 3339 (SOURCE_DATE_EPOCH does not change it).
            try c.count(0...0)
            return .string(rfc3339(c.now()))
        },

        "concat": { c in
            var out: [HCLValue] = []
            for i in c.args.indices { out += try c.list(i) }
            return .list(out)
        },
        "distinct": { c in
            try c.count(1...1)
            var out: [HCLValue] = []
            for v in try c.list(0) where !out.contains(v) { out.append(v) }
            return .list(out)
        },
        "compact": { c in
            try c.count(1...1)
            return .list(try c.list(0).filter { !$0.isNull && $0 != .string("") })
        },
        "coalesce": { c in
            // cty's coalesce: the first argument that is not null.
            guard let v = c.args.first(where: { !$0.isNull }) else { throw c.fail("no non-null arguments") }
            return v
        },
        "lookup": { c in
            try c.count(2...3)
            let o = try c.object(0), k = try c.string(1)
            if let v = o[k] { return v }
            if c.args.count == 3 { return c.args[2] }
            throw c.fail("no key \"\(k)\" and no default given")
        },
        "length": { c in
            try c.count(1...1)
            switch c.args[0] {
            case .list(let l): return .number(Double(l.count))
            case .object(let o): return .number(Double(o.count))
            case .string(let s): return .number(Double(s.count))
            default: throw c.fail("needs a list, map or string, not a \(c.args[0].typeName)")
            }
        },
        "contains": { c in try c.count(2...2); return .bool(try c.list(0).contains(c.args[1])) },
        "index": { c in
            try c.count(2...2)
            do { return try Evaluator.index(c.args[0], c.args[1], c.pos) } catch let e as BakeError {
                throw c.fail(e.message)
            }
        },
        "indexof": { c in
            try c.count(2...2)
            guard let i = try c.list(0).firstIndex(of: c.args[1]) else { throw c.fail("the list does not hold \(c.args[1].jsonText)") }
            return .number(Double(i))
        },
        "keys": { c in try c.count(1...1); return .list(try c.object(0).keys.sorted().map { .string($0) }) },
        "values": { c in
            try c.count(1...1)
            let o = try c.object(0)
            return .list(o.keys.sorted().map { o[$0]! })
        },
        "element": { c in
            try c.count(2...2)
            let l = try c.list(0), i = try c.int(1)
            guard !l.isEmpty else { throw c.fail("cannot take an element of an empty list") }
            guard i >= 0 else { throw c.fail("the index must not be negative") }
            // Wraps around, as Terraform's and cty's element do.
            return l[i % l.count]
        },
        "slice": { c in
            try c.count(3...3)
            let l = try c.list(0), from = try c.int(1), to = try c.int(2)
            guard from >= 0, to <= l.count, from <= to else {
                throw c.fail("[\(from), \(to)) is not within the list's \(l.count) elements")
            }
            return .list(Array(l[from..<to]))
        },
        "flatten": { c in
            try c.count(1...1)
            func flat(_ l: [HCLValue]) -> [HCLValue] {
                l.flatMap { v -> [HCLValue] in if case .list(let inner) = v { flat(inner) } else { [v] } }
            }
            return .list(flat(try c.list(0)))
        },
        "merge": { c in
            var out: [String: HCLValue] = [:]
            for i in c.args.indices where !c.args[i].isNull {
                out.merge(try c.object(i)) { _, new in new }
            }
            return .object(out)
        },
        "min": { c in
            try c.count(atLeast: 1)
            return .number(try c.args.indices.map { try c.number($0) }.min()!)
        },
        "max": { c in
            try c.count(atLeast: 1)
            return .number(try c.args.indices.map { try c.number($0) }.max()!)
        },
        "abs": { c in try c.count(1...1); return .number(abs(try c.number(0))) },
        "ceil": { c in try c.count(1...1); return .number((try c.number(0)).rounded(.up)) },
        "floor": { c in try c.count(1...1); return .number((try c.number(0)).rounded(.down)) },
        "add": { c in try c.count(2...2); return .number(try c.number(0) + c.number(1)) },
        "subtract": { c in try c.count(2...2); return .number(try c.number(0) - c.number(1)) },
        "multiply": { c in try c.count(2...2); return .number(try c.number(0) * c.number(1)) },
        "tostring": { c in
            try c.count(1...1)
            if c.args[0].isNull { return .null }
            return .string(try c.string(0))
        },
        "tonumber": { c in
            try c.count(1...1)
            if c.args[0].isNull { return .null }
            return .number(try c.number(0))
        },
        "sort": { c in
            try c.count(1...1)
            let strings = try c.list(0).map { v -> String in
                guard let s = v.asString else { throw c.fail("can only sort strings, not \(v.typeName)") }
                return s
            }
            // Go compares strings by bytes, not by Swift's Unicode ordering.
            return .list(strings.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }.map { .string($0) })
        },
        "reverse": { c in try c.count(1...1); return .string(String(try c.string(0).reversed())) },
        "reverselist": { c in try c.count(1...1); return .list(try c.list(0).reversed()) },
    ]

    static func regex(_ c: FunctionCall, _ pattern: String) throws -> NSRegularExpression {
        do { return try NSRegularExpression(pattern: pattern) } catch {
            throw c.fail("invalid regular expression \(pattern)")
        }
    }

    static func namedGroups(_ pattern: String) -> [String] {
        guard let re = try? NSRegularExpression(pattern: #"\(\?P?<([A-Za-z][A-Za-z0-9_]*)>"#) else { return [] }
        return re.matches(in: pattern, range: NSRange(pattern.startIndex..., in: pattern)).compactMap {
            Range($0.range(at: 1), in: pattern).map { String(pattern[$0]) }
        }
    }

    static func rfc3339(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"
        return f.string(from: d)
    }

    /// cty's format: %s %d %f %t %v %q %% with optional width and precision (`%5.2f`).
    static func format(_ c: FunctionCall, _ fmt: String, _ args: [HCLValue]) throws -> String {
        var out = ""
        var chars = Array(fmt)[...]
        var next = 0
        while let ch = chars.popFirst() {
            guard ch == "%" else { out.append(ch); continue }
            var spec = ""
            while let f = chars.first, "0123456789.-+# ".contains(f) { spec.append(f); chars = chars.dropFirst() }
            guard let verb = chars.popFirst() else { throw c.fail("the format ends inside a verb") }
            if verb == "%" { out.append("%"); continue }
            guard next < args.count else { throw c.fail("not enough arguments for the format \(fmt)") }
            let v = args[next]
            next += 1
            let parts = spec.split(separator: ".", omittingEmptySubsequences: false)
            let leftAlign = spec.hasPrefix("-")
            let width = Int(parts.first?.filter(\.isNumber) ?? "") ?? 0
            let precision = parts.count > 1 ? Int(parts[1]) : nil
            // A width or precision of a billion asked for a gigabyte of padding.
            guard width <= Self.maxFormatWidth, (precision ?? 0) <= Self.maxFormatWidth, parts.count <= 2,
                  parts.first?.filter(\.isNumber).count ?? 0 <= 6 else {
                throw c.fail("the width and precision of %\(spec)\(verb) must be at most \(Self.maxFormatWidth)")
            }
            var text: String
            switch verb {
            case "s", "v":
                if case .list = v, verb == "v" { text = v.jsonText } else if case .object = v, verb == "v" { text = v.jsonText } else {
                    guard let s = v.asString else { throw c.fail("%\(verb) needs a string, not a \(v.typeName)") }
                    text = s
                }
                if let p = precision { text = String(text.prefix(p)) }
            case "d":
                guard let d = v.asNumber, let i = Int64(exactly: d) else { throw c.fail("%d needs a whole number within Int64, not \(v.jsonText)") }
                text = String(i)
            case "f":
                guard let d = v.asNumber else { throw c.fail("%f needs a number, not \(v.jsonText)") }
                text = String(format: "%.\(precision ?? 6)f", d)
            case "t":
                guard let b = v.asBool else { throw c.fail("%t needs a bool, not \(v.jsonText)") }
                text = b ? "true" : "false"
            case "q":
                guard let s = v.asString else { throw c.fail("%q needs a string, not a \(v.typeName)") }
                text = GoJSON.quote(s, escapeHTML: false)
            default:
                throw c.fail("unsupported verb %\(verb)")
            }
            if text.count < width {
                let pad = String(repeating: spec.hasPrefix("0") && !leftAlign ? "0" : " ", count: width - text.count)
                text = leftAlign ? text + pad : pad + text
            }
            out += text
        }
        if next < args.count { throw c.fail("too many arguments for the format \(fmt)") }
        return out
    }

    /// Terraform's formatdate: YYYY YY MMMM MMM MM M DD D EEEE EEE hh h HH H AA aa mm m ss s
    /// ZZZZZ ZZZZ ZZZ Z; text in single quotes is literal ('' is a quote).
    static func formatDate(_ c: FunctionCall, _ spec: String, _ timestamp: String) throws -> String {
        guard let (date, offset) = parseRFC3339(timestamp) else {
            throw c.fail("\"\(timestamp)\" is not an RFC 3339 timestamp (as 2025-09-16T12:00:00Z)")
        }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(secondsFromGMT: offset)!
        let p = cal.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        func pad(_ n: Int, _ w: Int) -> String { String(repeating: "0", count: max(0, w - String(n).count)) + String(n) }
        func zone(colon: Bool) -> String {
            let sign = offset < 0 ? "-" : "+"
            let a = abs(offset)
            return sign + pad(a / 3600, 2) + (colon ? ":" : "") + pad(a % 3600 / 60, 2)
        }
        var out = ""
        var chars = Array(spec)[...]
        while let ch = chars.first {
            if ch == "'" {
                chars = chars.dropFirst()
                if chars.first == "'" { out.append("'"); chars = chars.dropFirst(); continue }
                while let q = chars.popFirst() {
                    if q == "'" {
                        if chars.first == "'" { out.append("'"); chars = chars.dropFirst(); continue }
                        break
                    }
                    out.append(q)
                }
                continue
            }
            guard ch.isLetter else { out.append(ch); chars = chars.dropFirst(); continue }
            let run = chars.prefix { $0 == ch }
            chars = chars.dropFirst(run.count)
            let h12 = (p.hour! % 12 == 0) ? 12 : p.hour! % 12
            switch String(run) {
            case "YYYY": out += pad(p.year!, 4)
            case "YY": out += pad(p.year! % 100, 2)
            case "MMMM": out += months[p.month! - 1]
            case "MMM": out += String(months[p.month! - 1].prefix(3))
            case "MM": out += pad(p.month!, 2)
            case "M": out += String(p.month!)
            case "DD": out += pad(p.day!, 2)
            case "D": out += String(p.day!)
            case "EEEE": out += days[p.weekday! - 1]
            case "EEE": out += String(days[p.weekday! - 1].prefix(3))
            case "hh": out += pad(p.hour!, 2)
            case "h": out += String(p.hour!)
            case "HH": out += pad(h12, 2)
            case "H": out += String(h12)
            case "AA": out += p.hour! < 12 ? "AM" : "PM"
            case "aa": out += p.hour! < 12 ? "am" : "pm"
            case "mm": out += pad(p.minute!, 2)
            case "m": out += String(p.minute!)
            case "ss": out += pad(p.second!, 2)
            case "s": out += String(p.second!)
            case "ZZZZZ": out += zone(colon: true)
            case "ZZZZ": out += zone(colon: false)
            case "ZZZ": out += offset == 0 ? "UTC" : zone(colon: false)
            case "Z": out += offset == 0 ? "Z" : zone(colon: true)
            default: throw c.fail("invalid date format verb \"\(run)\" (quote literal letters: '\(run)')")
            }
        }
        return out
    }

    /// An RFC 3339 timestamp and its zone offset in seconds.
    static func parseRFC3339(_ s: String) -> (Date, Int)? {
        guard let re = try? NSRegularExpression(pattern: #"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"#),
              let m = re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) else { return nil }
        func g(_ i: Int) -> String { Range(m.range(at: i), in: s).map { String(s[$0]) } ?? "" }
        var offset = 0
        let z = g(8)
        if z != "Z" && z != "z" {
            let sign = z.hasPrefix("-") ? -1 : 1
            let hm = z.dropFirst().split(separator: ":")
            offset = sign * (Int(hm[0])! * 3600 + Int(hm[1])! * 60)
        }
        var comps = DateComponents()
        comps.year = Int(g(1)); comps.month = Int(g(2)); comps.day = Int(g(3))
        comps.hour = Int(g(4)); comps.minute = Int(g(5)); comps.second = Int(g(6))
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(secondsFromGMT: offset)!
        guard let d = cal.date(from: comps) else { return nil }
        return (d, offset)
    }
}
