#if canImport(Glibc)
import Glibc
#endif

/// A kernel release as major.minor, compared numerically.
public struct KernelVersion: Comparable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// Parses the start of a release string such as "6.18.44-fc-v657".
    public init?(release: String) {
        let nums = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        guard nums.count == 2 else { return nil }
        self.init(nums[0], nums[1])
    }

    public static var current: KernelVersion {
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return KernelVersion(release: release) ?? KernelVersion(0, 0)
    }

    public static func < (a: KernelVersion, b: KernelVersion) -> Bool {
        (a.major, a.minor) < (b.major, b.minor)
    }

    public var description: String { "\(major).\(minor)" }
}
