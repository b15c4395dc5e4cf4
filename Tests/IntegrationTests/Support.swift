import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// These tests drive the real `rbuild` binary. scripts/test runs them as unprivileged users
// (one with a subordinate id range, one without) with RBUILD_INTEGRATION=1; without that
// variable they are skipped, so that a plain `swift test` as root proves nothing by accident.

enum Env {
    static let vars = ProcessInfo.processInfo.environment
    static let enabled = vars["RBUILD_INTEGRATION"] == "1"
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static let binary = vars["RBUILD_BIN"] ?? packageRoot + "/.build/debug/rbuild"
    static let fixtures = vars["RBUILD_FIXTURES"] ?? packageRoot + "/fixtures"
    /// Whether this user has a subordinate id range (decides which identity tests apply).
    static let hasRange: Bool = {
        let r = try? rbuild(["info", "--format", "json"])
        return r?.stdout.contains("\"idMapping\" : \"subordinate\"") ?? false
    }()
}

struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs rbuild with `args`; `stdin` is fed to it, or /dev/null. After `timeout` seconds it is
/// killed (status 128+9), so that a test of a hang fails instead of hanging.
@discardableResult
func rbuild(_ args: [String], stdin: String? = nil, environment: [String: String]? = nil,
            timeout: Double? = nil) throws -> Result {
    try runProcess(Env.binary, args, stdin: stdin, environment: environment, timeout: timeout)
}

func runProcess(_ path: String, _ args: [String], stdin: String? = nil,
                environment: [String: String]? = nil, timeout: Double? = nil) throws -> Result {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    if let stdin {
        let inPipe = Pipe()
        p.standardInput = inPipe
        try p.run()
        inPipe.fileHandleForWriting.write(Data(stdin.utf8))
        try inPipe.fileHandleForWriting.close()
    } else {
        p.standardInput = FileHandle.nullDevice
        try p.run()
    }
    // rbuild's inner process (its own user namespace) and its sandboxes die with it.
    let killer = DispatchWorkItem { [pid = p.processIdentifier] in kill(pid, SIGKILL) }
    if let timeout { DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer) }
    defer { killer.cancel() }
    // Read both pipes concurrently so a chatty child cannot fill one and block.
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    let status = p.terminationReason == .uncaughtSignal ? 128 + p.terminationStatus : p.terminationStatus
    return Result(status: status, stdout: String(decoding: outData, as: UTF8.self),
                  stderr: String(decoding: errData, as: UTF8.self))
}

/// A private copy of the busybox root filesystem (owned by the test user, so that it is root's
/// inside), with the probe program as /bin/probe. Removed when the value is released.
final class Rootfs {
    let dir: String
    var path: String { dir + "/rootfs" }

    init(arch: String = "amd64") throws {
        let tmp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array(((tmp.hasSuffix("/") ? String(tmp.dropLast()) : tmp) + "/rbuild-it-XXXXXX").utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw POSIXError(.EIO)
        }
        dir = String(cString: p)
        let cp = try runProcess("/bin/cp", ["-a", Env.fixtures + "/rootfs-" + arch, path])
        guard cp.status == 0 else {
            throw FixtureError(message: "cannot copy fixture (run scripts/make-fixtures): \(cp.stderr)")
        }
        if arch == "amd64" {
            _ = try runProcess("/bin/cp", [Env.fixtures + "/probe-amd64", path + "/bin/probe"])
        }
    }

    deinit {
        _ = try? runProcess("/bin/rm", ["-rf", dir])
    }

    /// `rbuild run --rootfs … [options] -- argv`
    func run(_ options: [String] = [], _ argv: [String], stdin: String? = nil) throws -> Result {
        try rbuild(["run", "--rootfs", path] + options + ["--"] + argv, stdin: stdin)
    }

    /// An empty temp dir for rbuild, and the environment that points it there.
    func privateTempDir() throws -> (String, [String: String]) {
        let scratch = dir + "/scratch"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        var env = ProcessInfo.processInfo.environment
        env["XDG_RUNTIME_DIR"] = nil
        env["TMPDIR"] = scratch
        return (scratch, env)
    }

    func sh(_ script: String, _ options: [String] = []) throws -> Result {
        try run(options, ["/bin/sh", "-c", script])
    }
}

/// What `pipe` carries up to and including the first `text`, or up to its end when the writer
/// closes it first.
func read(_ pipe: Pipe, until text: String) -> String {
    var seen = Data()
    while !String(decoding: seen, as: UTF8.self).contains(text) {
        let chunk = pipe.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        seen += chunk
    }
    return String(decoding: seen, as: UTF8.self)
}

/// Starts a server that listens on a port the kernel picks and then prints that port on a line
/// of its standard output: the port, once the server listens (nothing raced, nothing taken).
/// `name` is for the error when the server exits or prints something else; `errorLog`, where
/// its standard error goes (quoted in that error), else nowhere.
func startReportingPort(_ process: Process, name: String, errorLog: String? = nil) throws -> Int {
    let out = Pipe()
    process.standardOutput = out
    if let errorLog {
        _ = FileManager.default.createFile(atPath: errorLog, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: errorLog)
    } else {
        process.standardError = FileHandle.nullDevice
    }
    try process.run()
    guard let port = Int(read(out, until: "\n").trimmed) else {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let said = errorLog.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
        throw FixtureError(message: "\(name) did not start" + (said.isEmpty ? "" : ": " + said))
    }
    return port
}

/// Polls `condition` every 50 ms until it holds or `seconds` have passed; whether it held.
/// (A `for _ in 0..<n where condition` loop only filters: it evaluates the condition n times
/// even after it held, and a condition that connects to a server made that cost minutes.)
@discardableResult
func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() >= deadline { return false }
        usleep(50_000)
    }
    return true
}

struct FixtureError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }

    /// What `make` returns, or its error as a FixtureError: a fixture made once per test process
    /// (a `static let`) keeps its failure for every test that asks.
    static func capture<T>(_ make: () throws -> T) -> Swift.Result<T, FixtureError> {
        do {
            return .success(try make())
        } catch let e as FixtureError {
            return .failure(e)
        } catch {
            return .failure(FixtureError(message: "\(error)"))
        }
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }

    /// The value of a `Key:\tvalue` line of /proc/PID/status.
    func statusField(_ key: String) -> String? {
        split(separator: "\n").first { $0.hasPrefix(key + ":") }
            .map { $0.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces) }
    }
}
