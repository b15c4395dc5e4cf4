import Foundation
import RBuildSolver
import RBuildSystem

/// One `RUN --mount=…` flag as written, parsed with the Dockerfile frontend's rules (BuildKit's
/// `type=cache,target=/root/.cache,sharing=locked`): comma-separated fields, a value in double
/// quotes may hold commas, a flag without a value means true, keys are case-insensitive.
struct RunMountFlag: Equatable {
    enum MountType: String, CaseIterable { case bind, cache, tmpfs, secret, ssh }
    var type: MountType = .bind
    var target: String?
    var source: String?
    var from: String?
    /// nil: the type's default (a bind is read-only, a cache writable).
    var readOnly: Bool?
    var id: String?
    var sharing: CacheSharing?
    var mode: mode_t?
    var uid: UInt32?
    var gid: UInt32?
    var size: Int64?
    var required: Bool?
    var env: String?

    /// The keys each type takes besides `type`.
    static let keys: [MountType: Set<String>] = [
        .bind: ["target", "source", "from", "readonly", "readwrite"],
        .cache: ["target", "source", "from", "readonly", "readwrite", "id", "sharing", "mode", "uid", "gid"],
        .tmpfs: ["target", "size"],
        .secret: ["target", "id", "required", "mode", "uid", "gid", "env"],
        .ssh: ["target", "id", "required", "mode", "uid", "gid"],
    ]

    /// Parses a flag's value; `expand` substitutes build arguments and variables in each value.
    static func parse(_ text: String, expand: (String) throws -> String) throws -> RunMountFlag {
        func bad(_ why: String) -> LoweringError { LoweringError("invalid --mount=\(text): \(why)") }
        var fields: [(key: String, value: String?)] = []
        for field in try splitFields(text) {
            let kv = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            var key = kv[0].trimmingCharacters(in: .whitespaces).lowercased()
            switch key {
            case "src": key = "source"
            case "dst", "destination": key = "target"
            case "ro": key = "readonly"
            case "rw": key = "readwrite"
            default: break
            }
            fields.append((key, kv.count > 1 ? try expand(kv[1]) : nil))
        }
        var m = RunMountFlag()
        if let t = fields.last(where: { $0.key == "type" }) {
            guard let v = t.value, let type = MountType(rawValue: v.lowercased()) else {
                throw bad("unknown mount type \"\(t.value ?? "")\" (expected bind, cache, tmpfs, secret or ssh)")
            }
            m.type = type
        }
        func flag(_ key: String, _ value: String?) throws -> Bool {
            guard let value else { return true }
            guard let b = Bool(value.lowercased()) else { throw bad("\(key)=\(value) is not true or false") }
            return b
        }
        func id(_ key: String, _ value: String?) throws -> UInt32 {
            guard let value, let n = UInt32(value) else { throw bad("\(key)=\(value ?? "") is not a number") }
            return n
        }
        for (key, value) in fields where key != "type" {
            guard keys[m.type]!.contains(key) else {
                let known = RunMountFlag.keys.values.contains { $0.contains(key) }
                throw bad(known ? "\(key) does not apply to a \(m.type.rawValue) mount" : "unknown key \"\(key)\"")
            }
            func string() throws -> String {
                guard let value else { throw bad("\(key) needs a value") }
                return value
            }
            switch key {
            case "target": m.target = try string()
            case "source": m.source = try string()
            case "from": m.from = try string()
            case "readonly": m.readOnly = try flag(key, value)
            case "readwrite": m.readOnly = try !flag(key, value)
            case "id": m.id = try string()
            case "sharing":
                guard let s = CacheSharing(rawValue: try string().lowercased()) else {
                    throw bad("sharing=\(value ?? "") (expected shared, private or locked)")
                }
                m.sharing = s
            case "mode":
                guard let v = UInt32(try string(), radix: 8), v <= 0o7777 else { throw bad("mode=\(value ?? "") is not an octal mode") }
                m.mode = mode_t(v)
            case "uid": m.uid = try id(key, value)
            case "gid": m.gid = try id(key, value)
            case "size":
                guard let n = parseByteSize(try string()) else { throw bad("size=\(value ?? "") is not a size (such as 64m)") }
                m.size = n
            case "required": m.required = try flag(key, value)
            case "env": m.env = try string()
            default: throw bad("unknown key \"\(key)\"")
            }
        }
        switch m.type {
        case .bind, .cache, .tmpfs:
            guard let t = m.target, !t.isEmpty else { throw bad("a \(m.type.rawValue) mount needs target=") }
        case .secret:
            if (m.id ?? "").isEmpty && (m.target ?? "").isEmpty { throw bad("a secret mount needs id= or target=") }
        case .ssh:
            break
        }
        return m
    }

    /// Splits on commas outside double quotes (which are removed), as Go's encoding/csv reads
    /// one record.
    static func splitFields(_ text: String) throws -> [String] {
        var fields: [String] = [], current = "", quoted = false
        for c in text {
            if c == "\"" { quoted.toggle(); continue }
            if c == "," && !quoted {
                fields.append(current)
                current = ""
                continue
            }
            current.append(c)
        }
        guard !quoted else { throw LoweringError("invalid --mount=\(text): a double quote is not closed") }
        fields.append(current)
        return fields.filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    }
}
