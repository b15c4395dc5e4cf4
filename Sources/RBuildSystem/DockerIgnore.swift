import Foundation

/// `.dockerignore` rules: Go `filepath.Match` patterns per path segment, `**` for any number of
/// segments, `!` exceptions applied in order (the last matching line wins), leading `/` and `./`
/// cleaned. A pattern that matches a directory excludes everything below it.
public struct DockerIgnore: Sendable, Equatable {
    public struct Pattern: Sendable, Equatable {
        public var text: String
        public var exclusion: Bool
        var segments: [String]
        /// The line as it would be written back (`!` first for an exception), which reads back as
        /// this pattern: a leading `./` or a trailing `/` keeps what reading would take for a
        /// comment or an exception, or trim (`./  x`, `a  /` read as `  x` and `a  `, as Docker
        /// reads them).
        public var line: String {
            var t = text
            if let first = t.unicodeScalars.first, CharacterSet.whitespaces.contains(first) || first == "#" || first == "!" {
                t = "./" + t
            }
            if let last = t.unicodeScalars.last, CharacterSet.whitespaces.contains(last) { t += "/" }
            return (exclusion ? "!" : "") + t
        }
    }

    public private(set) var patterns: [Pattern]

    public init(_ text: String) {
        patterns = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).compactMap { raw in
            var line = raw.trimmingCharacters(in: .whitespaces)
            // (`#` and `!` as scalars, as Docker reads bytes: not joined to a combining mark.)
            if line.isEmpty || line.unicodeScalars.first == "#" { return nil }
            var exclusion = false
            if line.unicodeScalars.first == "!" {
                exclusion = true
                line = Substring(line.unicodeScalars.dropFirst()).trimmingCharacters(in: .whitespaces)
            }
            let cleaned = DockerIgnore.clean(line)
            if cleaned.isEmpty { return nil }
            return Pattern(text: cleaned, exclusion: exclusion, segments: pathComponents(cleaned).map(String.init))
        }
    }

    /// filepath.Clean plus removing a leading `/` or `./`.
    static func clean(_ path: String) -> String {
        var out: [Substring] = []
        for part in pathComponents(path) {
            switch part {
            case ".": continue
            case "..": if !out.isEmpty && out.last != ".." { out.removeLast() } else if path.unicodeScalars.first == "/" { continue } else { out.append(part) }
            default: out.append(part)
            }
        }
        return out.joined(separator: "/")
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded from the context.
    public func matches(_ path: String) -> Bool {
        if patterns.isEmpty { return false }
        let segs = pathComponents(DockerIgnore.clean(path)).map(String.init)
        guard !segs.isEmpty else { return false }
        var excluded = false
        for p in patterns {
            // A pattern matches the path itself or any directory above it.
            var hit = false
            for n in stride(from: segs.count, through: 1, by: -1) where DockerIgnore.match(p.segments[...], segs[0..<n]) {
                hit = true
                break
            }
            if hit { excluded = !p.exclusion }
        }
        return excluded
    }

    /// Whether a whole directory can be skipped without looking inside: it is excluded and no
    /// exception could bring back anything below it.
    public func canSkipDirectory(_ path: String) -> Bool {
        guard matches(path) else { return false }
        let dir = DockerIgnore.clean(path)
        for p in patterns where p.exclusion {
            // An exception that could match below this directory: a wildcard anywhere, or a
            // literal path under it.
            if p.text.unicodeScalars.contains(where: { "*?[\\".unicodeScalars.contains($0) }) { return false }
            if p.text.unicodeScalars.starts(with: (dir + "/").unicodeScalars) { return false }
        }
        return true
    }

    static func match(_ pattern: ArraySlice<String>, _ path: ArraySlice<String>) -> Bool {
        guard let first = pattern.first else { return path.isEmpty }
        if first == "**" {
            let rest = pattern.dropFirst()
            for k in path.startIndex...path.endIndex where match(rest, path[k...]) { return true }
            return false
        }
        guard let seg = path.first, segmentMatch(Array(first), Array(seg)) else { return false }
        return match(pattern.dropFirst(), path.dropFirst())
    }

    /// Go's filepath.Match within one segment (`*` never crosses a `/`).
    static func segmentMatch(_ p: [Character], _ s: [Character]) -> Bool {
        globMatch(p.map { $0 }, s[...])
    }
}
