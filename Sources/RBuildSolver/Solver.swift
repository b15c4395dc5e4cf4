import Foundation
import RBuildOCI

/// A step's cache key: the sha256 of its parent's key and every input that can change its
/// result, each as a named field (so that "a" + "bc" and "ab" + "c" never collide).
public struct CacheKey: Sendable {
    private var fields: [(String, String)] = []

    public init(parent: Digest?) {
        add("parent", parent?.description ?? "")
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append((name, value))
    }

    public mutating func add(_ name: String, _ values: [String]) {
        add(name, "\(values.count)")
        for v in values { add(name + "[]", v) }
    }

    /// The digest of a few plain fields.
    public static func of(_ fields: [String]) -> Digest {
        var k = CacheKey(parent: nil)
        k.add("fields", fields)
        return k.digest
    }

    public var digest: Digest {
        let h = SHA256()
        for (name, value) in fields {
            h.update(Array("\(name.utf8.count):\(name)\(value.utf8.count):".utf8))
            h.update(Array(value.utf8))
        }
        return h.finish()
    }
}

/// Work identified by a key is done once per process however many stages ask for it: the
/// first caller computes, the others wait for its result (or its error).
public final class InFlight<Value: Sendable>: @unchecked Sendable {
    private final class Slot {
        var value: Result<Value, Error>?
        let done = NSCondition()
    }
    private var slots: [Digest: Slot] = [:]
    private let lock = NSLock()

    public init() {}

    public func run(_ key: Digest, _ work: () throws -> Value) throws -> Value {
        lock.lock()
        if let slot = slots[key] {
            lock.unlock()
            slot.done.lock()
            while slot.value == nil { slot.done.wait() }
            slot.done.unlock()
            return try slot.value!.get()
        }
        let slot = Slot()
        slots[key] = slot
        lock.unlock()
        let result = Result { try work() }
        slot.done.lock()
        slot.value = result
        slot.done.broadcast()
        slot.done.unlock()
        if case .failure = result {
            // A failure is not remembered: a later caller (another build in this process) retries.
            lock.lock(); slots[key] = nil; lock.unlock()
        }
        return try result.get()
    }
}

/// Runs jobs that depend on one another, each as soon as everything it needs has finished,
/// independent ones in parallel (up to `parallelism` at once). The first failure stops new jobs
/// from starting and is thrown once the running ones have returned.
public final class Scheduler: @unchecked Sendable {
    public struct Job {
        public var name: String
        public var dependencies: [String]
        public var work: @Sendable () throws -> Void
        public init(name: String, dependencies: [String], work: @escaping @Sendable () throws -> Void) {
            self.name = name
            self.dependencies = dependencies
            self.work = work
        }
    }

    let parallelism: Int
    public init(parallelism: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)) {
        self.parallelism = parallelism
    }

    final class State: @unchecked Sendable {
        let cond = NSCondition()
        var finished = Set<String>(), started = Set<String>()
        var running = 0
        var failure: Error?
    }

    public func run(_ jobs: [Job]) throws {
        let names = Set(jobs.map(\.name))
        for j in jobs {
            for d in j.dependencies where !names.contains(d) {
                throw SolveError("internal: job \(j.name) depends on \(d), which is not part of the build")
            }
        }
        let st = State()
        st.cond.lock()
        defer { st.cond.unlock() }
        while st.finished.count < jobs.count {
            if st.failure == nil {
                for j in jobs where !st.started.contains(j.name) && st.running < parallelism
                    && j.dependencies.allSatisfy({ st.finished.contains($0) }) {
                    st.started.insert(j.name)
                    st.running += 1
                    let work = j.work, name = j.name
                    Thread.detachNewThread {
                        var err: Error?
                        do { try work() } catch { err = error }
                        st.cond.lock()
                        st.running -= 1
                        st.finished.insert(name)
                        if let err, st.failure == nil { st.failure = err }
                        st.cond.broadcast()
                        st.cond.unlock()
                    }
                }
            }
            if st.running == 0 {
                if st.failure == nil && st.finished.count < jobs.count {
                    throw SolveError("internal: the build's jobs depend on one another in a cycle")
                }
                break
            }
            st.cond.wait()
        }
        if let failure = st.failure { throw failure }
    }
}
