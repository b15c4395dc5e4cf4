import Dispatch
import Synchronization

/// A dictionary behind a `Mutex`, for memo tables shared by concurrent tasks.
final class LockedDictionary<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let storage = Mutex<[Key: Value]>([:])

    init() {}

    /// The value already there, else `make()`'s (made under the lock: keep it cheap).
    func insertIfAbsent(_ key: Key, _ make: @autoclosure () -> Value) -> Value {
        storage.withLock { d in
            if let v = d[key] { return v }
            let v = make()
            d[key] = v
            return v
        }
    }

    subscript(key: Key) -> Value? {
        storage.withLock { $0[key] }
    }

    func set(_ key: Key, _ value: Value?) {
        storage.withLock { $0[key] = value }
    }

    var values: [Value] { storage.withLock { Array($0.values) } }
}

/// Where the solver's async work runs: threads of a dispatch queue of its own, never Swift's
/// shared cooperative pool. A synchronous caller that blocks a pool thread until a build ends
/// (the CLI, a test, an embedder calling `Builder.build` from async code) then cannot starve the
/// build it waits for — on a 2-core machine the pool has two threads.
package final class SolverExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "rbuild.solver", attributes: .concurrent)

    package static let shared = SolverExecutor()

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}
