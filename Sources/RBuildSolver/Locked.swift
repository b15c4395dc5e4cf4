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
