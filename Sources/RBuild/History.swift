import Foundation
import RBuildOCI
import RBuildRuntime
import RBuildSolver
import RBuildSystem
import Synchronization

/// One build as `rbuild history` shows it (buildx's build records): what was built, how it
/// ended, its step counts; its progress events are kept apart (`BuildHistory.events(of:)`).
public struct BuildRecord: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case running, completed, failed, canceled
    }
    /// 25 lowercase letters and digits, as buildx's ids.
    public var id: String
    /// The context directory's name, or the bake target's.
    public var name: String
    public var status: Status
    public var startedAt: Date
    public var completedAt: Date?
    /// The process writing the record: a `running` record whose process is gone was killed.
    public var pid: Int32
    public var context: String?
    public var dockerfile: String?
    public var target: String?
    public var platforms: [String]
    /// The outputs (`type=…`), and the `-t` names.
    public var outputs: [String]
    public var tags: [String]
    /// Steps started, those that ended (done, cached or failed), those whose result was cached.
    public var steps = 0
    public var completedSteps = 0
    public var cachedSteps = 0
    /// Why a failed build failed.
    public var error: String?
    /// The image written (the first output's), and its id.
    public var imageDigest: String?
    /// Bytes of step output left out of the stored log once it reached `BuildHistory.logLimit`.
    public var logDroppedBytes: Int64 = 0

    public var duration: TimeInterval? { completedAt.map { $0.timeIntervalSince(startedAt) } }
}

/// One recorded progress event: when (seconds after the build started) and what.
public struct RecordedEvent: Sendable {
    public var time: Double
    public var event: BuildEvent
}

/// The build records of a state dir: `history/<id>.json` (each replaced whole by rename, so a
/// crash mid-write leaves the previous version, and one record can never spoil another) and
/// `history/<id>.log.gz` (the progress events, one compact JSON array a line, gzip). The newest
/// `BuildHistory.keep` records are kept; at most `BuildHistory.trimAt` exist.
public struct BuildHistory: Sendable {
    public let directory: String
    /// How many records are kept at least: when a new one makes more than `trimAt`, the oldest
    /// are removed down to this.
    public static let keep = 100
    /// Trimming reads every record to order them (a few milliseconds for a hundred), so it waits
    /// for a tenth more instead of running at every build once the history is full.
    public static let trimAt = keep + keep / 10
    /// The most bytes of events one log keeps uncompressed; later step output is counted, not kept.
    public static let logLimit = 4 << 20

    public init(layout: StateLayout) { directory = layout.history }

    /// Every record, newest first. A `running` record whose process no longer exists is shown
    /// `canceled` (the build was killed before it could finish its record); unreadable files are
    /// skipped.
    public func list() -> [BuildRecord] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601withFraction
        var records: [BuildRecord] = []
        for n in names where n.hasSuffix(".json") && !n.hasPrefix(".") {
            guard let data = FileManager.default.contents(atPath: directory + "/" + n),
                  var r = try? decoder.decode(BuildRecord.self, from: data) else { continue }
            if r.status == .running && kill(r.pid, 0) != 0 && errno == ESRCH {
                r.status = .canceled
                r.error = r.error ?? "the build process (\(r.pid)) ended without finishing its record (killed?)"
            }
            records.append(r)
        }
        return records.sorted { ($0.startedAt, $0.id) > ($1.startedAt, $1.id) }
    }

    /// The record `ref` names: nil or empty the newest, `^N` the one N builds before it, else an
    /// id or an unambiguous prefix of one.
    public func record(_ ref: String?) throws -> BuildRecord {
        let all = list()
        let ref = ref ?? ""
        if ref.isEmpty || ref.hasPrefix("^") {
            let n = ref.isEmpty ? 0 : Int(ref.dropFirst())
            guard let n, n >= 0 else { throw BuildFailure("history reference \(ref): expected an id, or ^N for the N-th build before the newest") }
            guard n < all.count else {
                throw BuildFailure(all.isEmpty ? "no builds recorded in \(directory)" : "history reference \(ref): only \(all.count) build\(all.count == 1 ? "" : "s") recorded")
            }
            return all[n]
        }
        let matches = all.filter { $0.id.hasPrefix(ref.lowercased()) }
        if let exact = matches.first(where: { $0.id == ref.lowercased() }) { return exact }
        guard matches.count == 1 else {
            throw BuildFailure(matches.isEmpty ? "no build record \(ref) (see `rbuild history ls`)"
                                               : "history reference \(ref) names \(matches.count) builds: give more of the id")
        }
        return matches[0]
    }

    /// The events recorded for `record` (none for a build that was killed, or whose log is gone).
    public func events(of record: BuildRecord) throws -> [RecordedEvent] {
        guard let data = FileManager.default.contents(atPath: logPath(record.id)) else { return [] }
        guard let text = gunzip([UInt8](data)) else { throw BuildFailure("the log of build \(record.id) is damaged: \(logPath(record.id))") }
        return String(decoding: text, as: UTF8.self).split(separator: "\n").compactMap { RecordedEvent(line: $0) }
    }

    /// Removes the records `ids` names (their logs too).
    public func remove(_ record: BuildRecord) throws {
        for path in [recordPath(record.id), logPath(record.id)] where unlink(path) != 0 && errno != ENOENT {
            throw SystemError("unlink", path: path, errno: errno)
        }
    }

    func recordPath(_ id: String) -> String { directory + "/" + id + ".json" }
    func logPath(_ id: String) -> String { directory + "/" + id + ".log.gz" }

    /// Writes `record` whole (a sibling temp file renamed over it).
    func write(_ record: BuildRecord) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601withFraction
        try replaceFile(recordPath(record.id), [UInt8](try e.encode(record)))
    }

    func writeLog(_ id: String, _ bytes: [UInt8]) throws {
        try replaceFile(logPath(id), gzip(bytes))
    }

    func replaceFile(_ path: String, _ bytes: [UInt8]) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let tmp = directory + "/.tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try writeNewFile(tmp, bytes)
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw SystemError("rename", path: path, errno: e)
        }
    }

    /// Removes the oldest records past `keep` once there are more than `trimAt`, and temp files
    /// a killed writer left an hour ago.
    func trim() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        if names.lazy.filter({ $0.hasSuffix(".json") && !$0.hasPrefix(".") }).count > BuildHistory.trimAt {
            for r in list().dropFirst(BuildHistory.keep) { try? remove(r) }
        }
        for n in names where n.hasPrefix(".tmp-") {
            var st = stat()
            if stat(directory + "/" + n, &st) == 0, time(nil) - st.st_mtim.tv_sec > 3600 { unlink(directory + "/" + n) }
        }
    }

    /// A new record id: 25 random base-36 characters.
    static func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<25).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
    }
}

extension JSONEncoder.DateEncodingStrategy {
    static let iso8601withFraction = custom { date, encoder in
        var c = encoder.singleValueContainer()
        try c.encode(RFC3339.format(date, milliseconds: true))
    }
}

extension JSONDecoder.DateDecodingStrategy {
    static let iso8601withFraction = custom { decoder in
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let d = RFC3339.parse(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an RFC 3339 time: \(s)")
        }
        return d
    }
}

extension RecordedEvent {
    /// `[time, "S", step, name]`, `[time, "O", step, stream, text]`, `[time, "C", step]`,
    /// `[time, "D", step, seconds]`, `[time, "E", step, seconds, message]`, `[time, "N", text]`.
    var line: [UInt8] {
        let fields: [Any]
        let t = (time * 1000).rounded() / 1000
        switch event {
        case .started(let n, let name): fields = [t, "S", n, name]
        case .output(let n, let stream, let text): fields = [t, "O", n, stream, text]
        case .cached(let n): fields = [t, "C", n]
        case .finished(let n, let s): fields = [t, "D", n, (s * 1000).rounded() / 1000]
        case .failed(let n, let s, let m): fields = [t, "E", n, (s * 1000).rounded() / 1000, m]
        case .note(let text): fields = [t, "N", text]
        }
        return ((try? JSONSerialization.data(withJSONObject: fields, options: [.withoutEscapingSlashes])).map { [UInt8]($0) } ?? []) + [10]
    }

    init?(line: Substring) {
        guard let a = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [Any], a.count >= 2,
              let t = (a[0] as? NSNumber)?.doubleValue, let kind = a[1] as? String else { return nil }
        func int(_ i: Int) -> Int? { a.count > i ? (a[i] as? NSNumber)?.intValue : nil }
        func double(_ i: Int) -> Double? { a.count > i ? (a[i] as? NSNumber)?.doubleValue : nil }
        func string(_ i: Int) -> String? { a.count > i ? a[i] as? String : nil }
        switch kind {
        case "S": guard let n = int(2), let name = string(3) else { return nil }; event = .started(step: n, name: name)
        case "O": guard let n = int(2), let s = int(3), let text = string(4) else { return nil }; event = .output(step: n, stream: s, text: text)
        case "C": guard let n = int(2) else { return nil }; event = .cached(step: n)
        case "D": guard let n = int(2), let s = double(3) else { return nil }; event = .finished(step: n, seconds: s)
        case "E": guard let n = int(2), let s = double(3), let m = string(4) else { return nil }; event = .failed(step: n, seconds: s, message: m)
        case "N": guard let text = string(2) else { return nil }; event = .note(text)
        default: return nil
        }
        time = t
    }
}

/// Records one build: its record written `running` when it starts, its events as they come
/// (those of its own steps: a bake target's are the ones named `[TARGET …`), and the record
/// and log when it ends.
final class BuildRecorder: ProgressSink {
    struct State {
        var record: BuildRecord
        var log: [UInt8] = []
        var mine = Set<Int>()
        var ended = Set<Int>()
    }
    let history: BuildHistory
    let label: String?
    let start: Date
    private let state: Mutex<State>

    init(history: BuildHistory, options: BuildOptions, outputs: [String], tags: [String]) {
        self.history = history
        label = options.label
        start = Date()
        let platforms = (options.platforms.isEmpty ? [options.platform ?? Platform.host] : options.platforms).map(\.description)
        let name = options.label ?? options.contextDirectory.map { URL(fileURLWithPath: $0).standardizedFileURL.lastPathComponent } ?? "-"
        let record = BuildRecord(id: BuildHistory.newID(), name: name, status: .running, startedAt: start, pid: getpid(),
                                 context: options.contextDirectory, dockerfile: options.dockerfilePath ?? options.dockerfileName,
                                 target: options.target, platforms: platforms, outputs: outputs, tags: tags)
        state = Mutex(State(record: record))
        // A record that cannot be written costs the build nothing but its history.
        try? history.write(record)
        history.trim()
    }

    var id: String { state.withLock { $0.record.id } }

    func handle(_ event: BuildEvent) {
        state.withLock { s in
            switch event {
            case .started(let n, let name):
                if let label, !(name.hasPrefix("[\(label) ") || name.hasPrefix("[\(label)]")) { return }
                s.mine.insert(n)
                s.record.steps += 1
            case .output(let n, _, let text):
                guard s.mine.contains(n) else { return }
                if s.log.count + text.utf8.count > BuildHistory.logLimit {
                    s.record.logDroppedBytes += Int64(text.utf8.count)
                    return
                }
            case .cached(let n):
                guard s.mine.contains(n) else { return }
                s.record.cachedSteps += 1
            case .finished(let n, _), .failed(let n, _, _):
                guard s.mine.contains(n) else { return }
                if s.ended.insert(n).inserted { s.record.completedSteps += 1 }
            case .note:
                if label != nil { return }
            }
            s.log += RecordedEvent(time: Date().timeIntervalSince(start), event: event).line
        }
    }

    /// Writes the record as the build ended (`error` nil: completed), and its log.
    func finish(error: Error?, image: Digest? = nil) {
        let record = state.withLock { s in
            s.record.completedAt = Date()
            if let error {
                s.record.status = Sandbox.interruptedBy != 0 ? .canceled : .failed
                s.record.error = "\(error)"
            } else {
                s.record.status = .completed
                s.record.imageDigest = image?.description
            }
            return s.record
        }
        let log = state.withLock { $0.log }
        try? history.writeLog(record.id, log)
        try? history.write(record)
    }
}
