#if canImport(Glibc)
import Glibc
#endif
import CCap
import Foundation

/// A set of Linux capabilities, as the bitmask the kernel uses (bit n = capability n).
public struct CapabilitySet: Hashable, Sendable {
    public var mask: UInt64

    public init(mask: UInt64) {
        self.mask = mask
    }

    /// Accepts `CAP_CHOWN`, `chown`, any case; `ALL` means every capability the kernel knows.
    public init(names: [String]) throws {
        var mask: UInt64 = 0
        for name in names {
            if name.uppercased() == "ALL" {
                mask |= CapabilitySet.all.mask
                continue
            }
            guard let n = CapabilitySet.number(of: name) else {
                throw RuntimeError(.badOption, "unknown capability '\(name)' (expected a name such as CAP_NET_ADMIN)")
            }
            mask |= 1 << UInt64(n)
        }
        self.mask = mask
    }

    /// libcap's number for a capability name, or nil.
    static func number(of name: String) -> Int? {
        var lower = name.lowercased()
        if !lower.hasPrefix("cap_") { lower = "cap_" + lower }
        var value: cap_value_t = 0
        guard cap_from_name(lower, &value) == 0, value >= 0, value < 64 else { return nil }
        return Int(value)
    }

    /// Canonical `CAP_…` names, in capability-number order.
    public var names: [String] {
        (0..<64).filter { mask & (1 << UInt64($0)) != 0 }.map { n in
            guard let p = cap_to_name(cap_value_t(n)) else { return "CAP_\(n)" }
            defer { cap_free(p) }
            return String(cString: p).uppercased()
        }
    }

    public func contains(_ name: String) -> Bool {
        guard let n = CapabilitySet.number(of: name) else { return false }
        return mask & (1 << UInt64(n)) != 0
    }

    /// What Docker gives a container's root by default (moby's oci/caps/defaults.go).
    public static let dockerDefault = try! CapabilitySet(names: [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ])

    /// The highest capability number the running kernel knows.
    public static let lastCap: Int = {
        let fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 40 }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 16)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return 40 }
        return Int(String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 40
    }()

    /// Every capability the running kernel knows.
    public static var all: CapabilitySet {
        CapabilitySet(mask: lastCap >= 63 ? .max : (1 << UInt64(lastCap + 1)) - 1)
    }
}
