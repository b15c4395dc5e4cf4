import Foundation

/// A git repository named by a URL, with BuildKit's extras: which strings are git URLs, and what
/// their `#REF:SUBDIR` fragment and `?ref=…&subdir=…` query mean. The rules are those of
/// BuildKit's `util/gitutil` (ParseURL) and the Dockerfile frontend's `dfgitutil` (ParseGitRef):
///
/// - `scheme://…` with scheme http, https, ssh or git (any case); another scheme is not git.
///   An http(s) URL is git only when its path ends in `.git` (`https://h/o/r` is a download).
/// - scp-like `USER@HOST:PATH` (`git@github.com:o/r.git`), which git reaches over ssh.
/// - `github.com/o/r`, git only where a local path could not be meant (a build context);
///   `./…` and `../…` never are.
/// - The fragment is `REF[:SUBDIR]`; the query may say `ref`, `tag` (→ `refs/tags/…`), `branch`
///   (→ `refs/heads/…`), `subdir`, `checksum`/`commit`, `keep-git-dir`, `submodules`, `mtime`
///   (`checkout` or `commit`), `fetch-by-commit`; conflicting values are an error.
public struct GitReference: Sendable, Equatable {
    /// What git is given: the URL without fragment and query (`git@h:o/r.git`, `https://h/o/r.git`).
    public var remote: String
    /// http, https, ssh or git.
    public var scheme: String
    /// The repository's name (`r` for `…/o/r.git`).
    public var shortName: String
    /// A branch, tag, full ref or commit; empty: the remote's default branch (its HEAD).
    public var ref = ""
    /// The commit (or a prefix of it, or the annotated tag's object) the ref must resolve to.
    public var checksum: String?
    /// A directory inside the repository, clean and relative ("" for its root).
    public var subdir = ""
    public var keepGitDir: Bool?
    public var submodules: Bool?
    /// `checkout` (files get the time they were checked out, BuildKit's default) or `commit`.
    public var mtime: String?
    public var fetchByCommit = false
    /// `github.com/o/r`: accepted as a build context only (it could be a local path).
    public var indistinguishableFromLocal = false

    /// The remote with any password hidden, for messages and a kept `.git`'s origin.
    public var redactedRemote: String { GitReference.redact(remote) }

    /// The URL as a message shows it: the remote (password hidden) and `#REF:SUBDIR`.
    public var display: String {
        redactedRemote + (ref.isEmpty && subdir.isEmpty ? "" : "#" + ref) + (subdir.isEmpty ? "" : ":" + subdir)
    }

    /// nil: `text` is not a git URL (a path, a download, another scheme). Throws when it is
    /// one whose options are wrong (an unknown query key, conflicting refs).
    public static func parse(_ text: String) throws -> GitReference? {
        if text.hasPrefix("./") || text.hasPrefix("../") { return nil }
        var url: ParsedURL
        var local = false
        if text.hasPrefix("github.com/") {
            guard var u = ParsedURL(standard: "https://" + text) else { return nil }
            u.remote = String(u.remote.dropFirst("https://".count))
            url = u
            local = true
        } else if let scheme = schemePrefix(text) {
            guard ["http", "https", "ssh", "git"].contains(scheme), let u = ParsedURL(standard: text) else { return nil }
            if scheme == "http" || scheme == "https", !u.path.hasSuffix(".git") { return nil }
            url = u
        } else if let u = ParsedURL(scpLike: text) {
            url = u
        } else {
            return nil
        }
        var r = GitReference(remote: url.remote, scheme: url.scheme,
                             shortName: String(url.remote.split(separator: "/", omittingEmptySubsequences: false).last ?? "")
                                 .replacingOccurrences(of: ".git", with: "", options: [.anchored, .backwards]))
        r.indistinguishableFromLocal = local
        if let fragment = url.fragment, !fragment.isEmpty {
            let parts = fragment.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            r.ref = String(parts[0])
            if parts.count > 1 { r.subdir = cleanRelative(String(parts[1])) }
        }
        try r.load(query: url.query)
        return r
    }

    /// BuildKit's `loadQuery`: each key at most once; refs and subdirs must agree with the fragment's.
    mutating func load(query: [(String, String?)]) throws {
        var seen = Set<String>()
        var tag = "", branch = ""
        func flag(_ key: String, _ value: String?) throws -> Bool {
            guard let value else { return true }
            switch value.lowercased() {
            case "1", "t", "true": return true
            case "0", "f", "false": return false
            default: throw SolveError("invalid \(key) value: \"\(value)\"")
            }
        }
        for (key, value) in query {
            guard seen.insert(key).inserted else { throw SolveError("query \"\(key)\" has multiple values") }
            if (value ?? "").isEmpty, !["submodules", "keep-git-dir", "fetch-by-commit"].contains(key) {
                throw SolveError("query \"\(key)\" has no value")
            }
            let v = (value ?? "").isEmpty ? nil : value
            switch key {
            case "ref":
                if !ref.isEmpty && ref != v! { throw SolveError("ref conflicts: \"\(ref)\" vs \"\(v!)\"") }
                ref = v!
            case "tag": tag = v!
            case "branch": branch = v!
            case "subdir":
                let s = GitReference.cleanRelative(v!)
                if !subdir.isEmpty && subdir != s { throw SolveError("subdir conflicts: \"\(subdir)\" vs \"\(v!)\"") }
                subdir = s
            case "checksum", "commit": checksum = v!
            case "keep-git-dir": keepGitDir = try flag(key, v)
            case "submodules": submodules = try flag(key, v)
            case "fetch-by-commit": fetchByCommit = try flag(key, v)
            case "mtime":
                guard v == "checkout" || v == "commit" else {
                    throw SolveError("invalid mtime value: \"\(v!)\" (must be \"checkout\" or \"commit\")")
                }
                mtime = v
            default:
                throw SolveError("unexpected query \"\(key)\"")
            }
        }
        if !tag.isEmpty {
            let full = tag.hasPrefix("refs/tags/") ? tag : "refs/tags/" + tag
            if !ref.isEmpty && ref != full { throw SolveError("ref conflicts: \"\(ref)\" vs \"\(full)\"") }
            ref = full
        }
        if !branch.isEmpty {
            if !tag.isEmpty { throw SolveError("branch conflicts with tag") }
            let full = branch.hasPrefix("refs/heads/") ? branch : "refs/heads/" + branch
            if !ref.isEmpty && ref != full { throw SolveError("ref conflicts: \"\(ref)\" vs \"\(full)\"") }
            ref = full
        }
    }

    /// `https://user:secret@host/…` → `https://user:xxxxx@host/…` (BuildKit's RedactCredentials),
    /// wherever such a URL is in `text`.
    public static func redact(_ text: String) -> String {
        text.replacingOccurrences(of: "(://[^/@:\\s]+:)[^/@\\s]+@", with: "$1xxxxx@", options: .regularExpression)
    }

    /// `[a-zA-Z0-9]+://`'s scheme, lowercased.
    static func schemePrefix(_ text: String) -> String? {
        guard let r = text.range(of: "://") else { return nil }
        let s = text[..<r.lowerBound]
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else { return nil }
        return s.lowercased()
    }

    /// `/a/../b/` → `b`: a subdir as BuildKit cleans it (`path.Join("/", s)` without the slash).
    static func cleanRelative(_ s: String) -> String {
        var out: [Substring] = []
        for c in s.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { if !out.isEmpty { out.removeLast() }; continue }
            out.append(c)
        }
        return out.joined(separator: "/")
    }
}

/// The parts of a URL that matter here, as Go's net/url splits them.
private struct ParsedURL {
    var scheme: String
    var remote: String
    var path: String
    var query: [(String, String?)] = []
    var fragment: String?

    /// `scheme://[user[:pass]@]host[:port]/path[?query][#fragment]`.
    init?(standard text: String) {
        guard let sep = text.range(of: "://") else { return nil }
        scheme = text[..<sep.lowerBound].lowercased()
        var rest = Substring(text[sep.upperBound...])
        if let hash = rest.firstIndex(of: "#") {
            fragment = String(rest[rest.index(after: hash)...]).removingPercentEncoding ?? String(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
        }
        if let q = rest.firstIndex(of: "?") {
            query = ParsedURL.parseQuery(rest[rest.index(after: q)...])
            rest = rest[..<q]
        }
        guard !rest.isEmpty else { return nil }
        remote = scheme + "://" + rest
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        path = String(rest[authorityEnd...])
    }

    /// `USER@HOST:PATH[?query][#fragment]`, BuildKit's `^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$`.
    init?(scpLike text: String) {
        guard let at = text.firstIndex(of: "@") else { return nil }
        let user = text[..<at]
        let afterAt = text[text.index(after: at)...]
        guard let colon = afterAt.firstIndex(of: ":") else { return nil }
        let host = afterAt[..<colon]
        func ok(_ s: Substring, _ extra: String) -> Bool {
            !s.isEmpty && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || extra.contains($0)) }
        }
        guard ok(user, "-_"), ok(host, "-.") else { return nil }
        var rest = afterAt[afterAt.index(after: colon)...]
        let end = rest.firstIndex { $0 == "?" || $0 == "#" } ?? rest.endIndex
        path = String(rest[..<end])
        rest = rest[end...]
        if rest.first == "?" {
            let q = rest.dropFirst()
            let hash = q.firstIndex(of: "#") ?? q.endIndex
            query = ParsedURL.parseQuery(q[..<hash])
            rest = q[hash...]
        }
        if rest.first == "#" { fragment = String(rest.dropFirst()) }
        scheme = "ssh"
        remote = "\(user)@\(host):\(path)"
    }

    /// `a=b&c`: keys in order, nil for a key without `=`; values percent-decoded.
    static func parseQuery(_ q: Substring) -> [(String, String?)] {
        q.split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                let plus = s.replacingOccurrences(of: "+", with: " ")
                return plus.removingPercentEncoding ?? plus
            }
            return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : nil)
        }
    }
}
