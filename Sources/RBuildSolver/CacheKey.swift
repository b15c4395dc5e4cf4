import Foundation
import Synchronization
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

/// Work identified by a key is done once per process however many callers ask for it: the
/// first caller computes, the others (on threads of their own: they block) wait for its result
/// or its error. A failure is not remembered: a later caller retries.
public final class InFlight<Value: Sendable>: Sendable {
    private final class Slot: Sendable {
        let value = Mutex<Result<Value, Error>?>(nil)
        let done = DispatchGroup()
        init() { done.enter() }
    }
    private let slots = Mutex<[Digest: Slot]>([:])

    public init() {}

    public func run(_ key: Digest, _ work: () throws -> Value) throws -> Value {
        let (slot, first) = slots.withLock { d -> (Slot, Bool) in
            if let s = d[key] { return (s, false) }
            let s = Slot()
            d[key] = s
            return (s, true)
        }
        if !first {
            slot.done.wait()
            return try slot.value.withLock { $0! }.get()
        }
        let result = Result { try work() }
        slot.value.withLock { $0 = result }
        if case .failure = result { slots.withLock { $0[key] = nil } }
        slot.done.leave()
        return try result.get()
    }
}
