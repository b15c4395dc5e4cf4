import ArgumentParser
import Foundation
import RBuild

/// Writes to stderr, whole lines at once (several threads report).
func writeErr(_ text: String) { writeText(text, to: 2) }

/// Writes all of `text` to `fd`.
func writeText(_ text: String, to fd: Int32) {
    var t = text
    t.withUTF8 { p in
        var off = 0
        while off < p.count {
            let n = write(fd, p.baseAddress! + off, p.count - off)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }
}

/// `--progress=plain`: buildx's plain format. Every line names its step (`#5`), output lines
/// carry the seconds since the step started.
final class PlainProgress: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    /// stderr for a build; `rbuild history logs` replays to stdout.
    private let fd: Int32

    private var starts: [Int: Double] = [:]

    init(fd: Int32 = 2) { self.fd = fd }

    func handle(_ event: BuildEvent) { handle(event, at: Date().timeIntervalSince1970) }

    /// The event as it happened at `time` (seconds; a replayed log gives the recorded ones).
    func handle(_ event: BuildEvent, at time: Double) {
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case .started(let n, let name):
            starts[n] = time
            writeText("#\(n) \(name)\n", to: fd)
        case .output(let n, _, let text):
            writeText("#\(n) \(String(format: "%.3f", time - (starts[n] ?? time))) \(text)\n", to: fd)
        case .cached(let n):
            writeText("#\(n) CACHED\n", to: fd)
        case .finished(let n, let s):
            writeText("#\(n) DONE \(String(format: "%.1f", s))s\n\n", to: fd)
        case .failed(let n, let s, let message):
            writeText("#\(n) ERROR: \(message.split(separator: "\n").first ?? "") (\(String(format: "%.1f", s))s)\n\n", to: fd)
        case .note(let text):
            writeText(text + "\n", to: fd)
        }
    }
}

/// `--progress=rawjson`: one JSON object per line, for programs.
final class JSONProgress: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    /// stderr for a build; `rbuild history logs` replays to stdout.
    private let fd: Int32

    init(fd: Int32 = 2) { self.fd = fd }

    func handle(_ event: BuildEvent) { handle(event, at: Date().timeIntervalSince1970) }

    func handle(_ event: BuildEvent, at time: Double) {
        var o: [String: Any] = ["time": time]
        switch event {
        case .started(let n, let name): o["step"] = n; o["event"] = "started"; o["name"] = name
        case .output(let n, let stream, let text): o["step"] = n; o["event"] = "output"; o["stream"] = stream; o["text"] = text
        case .cached(let n): o["step"] = n; o["event"] = "cached"
        case .finished(let n, let s): o["step"] = n; o["event"] = "done"; o["seconds"] = s
        case .failed(let n, let s, let m): o["step"] = n; o["event"] = "error"; o["seconds"] = s; o["error"] = m
        case .note(let text): o["event"] = "note"; o["text"] = text
        }
        guard let data = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) else { return }
        lock.lock()
        writeText(String(decoding: data, as: UTF8.self) + "\n", to: fd)
        lock.unlock()
    }
}

/// `--progress=tty`: a live view like buildx's, redrawn in place at most ten times a second:
/// a header with the elapsed time, one line per step (its time, CACHED, DONE or ERROR) and the
/// last lines of output of each running step.
final class TTYProgress: ProgressSink, @unchecked Sendable {
    struct StepView {
        var name: String
        var start = Date()
        var end: Date?
        var cached = false
        var failed = false
        var tail: [String] = []
    }
    private let lock = NSLock()
    private var steps: [Int: StepView] = [:]
    private var order: [Int] = []
    private var drawnLines = 0
    private var lastDraw = Date.distantPast
    private let begin = Date()
    private let width: Int
    private let height: Int

    init() {
        var ws = winsize()
        let ok = ioctl(2, UInt(TIOCGWINSZ), &ws) == 0
        width = ok && ws.ws_col > 20 ? Int(ws.ws_col) : 100
        height = ok && ws.ws_row > 5 ? Int(ws.ws_row) : 40
    }

    func handle(_ event: BuildEvent) {
        lock.lock()
        defer { lock.unlock() }
        var force = false
        switch event {
        case .started(let n, let name):
            steps[n] = StepView(name: name)
            order.append(n)
        case .output(let n, _, let text):
            steps[n]?.tail.append(text)
            if let c = steps[n]?.tail.count, c > 6 { steps[n]?.tail.removeFirst(c - 6) }
        case .cached(let n):
            steps[n]?.cached = true
        case .finished(let n, _):
            steps[n]?.end = Date()
            force = true
        case .failed(let n, _, _):
            steps[n]?.end = Date()
            steps[n]?.failed = true
            force = true
        case .note(let text):
            redraw(final: false)
            writeErr(text + "\n")
            drawnLines = 0
            return
        }
        if force || Date().timeIntervalSince(lastDraw) > 0.1 { redraw(final: false) }
    }

    func clip(_ s: String) -> String { s.count > width - 1 ? String(s.prefix(width - 2)) + "…" : s }

    func redraw(final: Bool) {
        lastDraw = Date()
        var out = drawnLines > 0 ? "\u{1b}[\(drawnLines)F" : ""
        var lines: [String] = []
        let done = order.filter { steps[$0]?.end != nil }.count
        lines.append("[+] Building \(String(format: "%.1f", Date().timeIntervalSince(begin)))s (\(done)/\(order.count))\(final ? " FINISHED" : "")")
        for n in order {
            guard let s = steps[n] else { continue }
            let t = String(format: "%.1fs", (s.end ?? Date()).timeIntervalSince(s.start))
            let status = s.failed ? " ERROR" : s.cached ? " CACHED" : ""
            lines.append(" => \(s.name)\(status)  \(t)")
            if s.end == nil || s.failed {
                for l in s.tail { lines.append("\u{1b}[2m => => # \(l)\u{1b}[0m") }
            }
        }
        // What fits on the screen: the header and the latest lines (a cursor cannot move up past
        // the top of the terminal to redraw the rest).
        if lines.count > height - 1 { lines = [lines[0]] + lines.suffix(height - 2) }
        for l in lines { out += "\u{1b}[2K" + clip(l) + "\n" }
        if lines.count < drawnLines {
            for _ in lines.count..<drawnLines { out += "\u{1b}[2K\n" }
            out += "\u{1b}[\(drawnLines - lines.count)F"
        }
        drawnLines = lines.count
        writeErr(out)
    }

    func finish() {
        lock.lock()
        redraw(final: true)
        lock.unlock()
    }
}

/// The display `--progress MODE` asks for (`auto`: the live view on a terminal, else plain), and
/// the live view itself when it is that one (it must be finished before anything else prints).
func progressSink(_ mode: String) throws -> (ProgressSink?, TTYProgress?) {
    switch mode {
    case "auto":
        if isatty(2) == 1 { let t = TTYProgress(); return (t, t) }
        return (PlainProgress(), nil)
    case "tty": let t = TTYProgress(); return (t, t)
    case "plain": return (PlainProgress(), nil)
    case "rawjson": return (JSONProgress(), nil)
    case "quiet": return (nil, nil)
    default: throw ValidationError("--progress \(mode): expected auto, tty, plain, rawjson or quiet")
    }
}

/// `--snapshotter NAME`, checked.
func snapshotterKind(_ name: String?) throws -> SnapshotterKind? {
    try name.map { name in
        guard let k = SnapshotterKind(rawValue: name) else {
            throw RuntimeError(.badOption, "--snapshotter \(name): expected overlay, fuse-overlayfs or copy")
        }
        return k
    }
}
