import Foundation
import Synchronization

/// What a build reports as it goes, one event at a time, for the CLI's displays (tty, plain,
/// rawjson) or an embedding program. Steps are numbered from 1 in the order they start, as
/// buildx numbers its vertices.
public enum BuildEvent: Sendable {
    /// A step began; `name` is what buildx shows (`[stage 2/4] RUN make`).
    case started(step: Int, name: String)
    /// Output of a running step (stream 1 stdout, 2 stderr).
    case output(step: Int, stream: Int, text: String)
    /// The step's result came from the cache.
    case cached(step: Int)
    case finished(step: Int, seconds: Double)
    case failed(step: Int, seconds: Double, message: String)
    /// A note that belongs to no step (a warning, an export summary).
    case note(String)
}

/// Receives events, from any thread.
public protocol ProgressSink: Sendable {
    func handle(_ event: BuildEvent)
}

/// Hands out step numbers and times steps.
public final class ProgressReporter: Sendable {
    private let display: ProgressSink?
    private let next = Mutex(1)
    /// Sinks that see every event besides the display (a build's history record).
    private let observers = Mutex<[any ProgressSink]>([])

    public init(sink: ProgressSink?) { self.display = sink }

    /// Every event goes to `observer` too, from now on.
    public func observe(_ observer: any ProgressSink) { observers.withLock { $0.append(observer) } }

    /// Stops sending events to `observer` (compared by identity).
    public func stopObserving(_ observer: any ProgressSink & AnyObject) {
        observers.withLock { $0.removeAll { ($0 as AnyObject) === observer } }
    }

    func emit(_ event: BuildEvent) {
        display?.handle(event)
        for o in observers.withLock({ $0 }) { o.handle(event) }
    }

    public final class Step: Sendable {
        public let number: Int
        let reporter: ProgressReporter
        let start = Date()
        private let ended = Mutex(false)

        init(number: Int, reporter: ProgressReporter) {
            self.number = number
            self.reporter = reporter
        }

        public func output(_ text: String, stream: Int = 1) {
            reporter.emit(.output(step: number, stream: stream, text: text))
        }

        public func cached() { reporter.emit(.cached(step: number)) }

        /// Marks the step ended; false when it already was.
        private func end() -> Bool {
            ended.withLock { e in
                defer { e = true }
                return !e
            }
        }

        public func finish() {
            guard end() else { return }
            reporter.emit(.finished(step: number, seconds: Date().timeIntervalSince(start)))
        }

        public func fail(_ message: String) {
            guard end() else { return }
            reporter.emit(.failed(step: number, seconds: Date().timeIntervalSince(start), message: message))
        }
    }

    public func start(_ name: String) -> Step {
        let n = next.withLock { n in
            defer { n += 1 }
            return n
        }
        emit(.started(step: n, name: name))
        return Step(number: n, reporter: self)
    }

    /// Runs `work` as one step: finished when it returns, failed (with the error) when it throws.
    public func step<T>(_ name: String, _ work: (Step) throws -> T) throws -> T {
        let s = start(name)
        do {
            let v = try work(s)
            s.finish()
            return v
        } catch {
            s.fail("\(error)")
            throw error
        }
    }

    public func note(_ text: String) { emit(.note(text)) }
}
