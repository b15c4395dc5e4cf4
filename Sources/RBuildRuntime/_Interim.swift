// INTERIM: replaced by Capabilities.swift and Seccomp.swift from the seccomp branch at merge.
#if canImport(Glibc)
import Glibc
#endif
public struct CapabilitySet: Hashable, Sendable {
    public var mask: UInt64
    public static let dockerDefault = CapabilitySet(mask: 0xa80425fb)
    public static var lastCap: Int { 40 }
}
public struct SeccompProfile: Sendable {}
public struct SeccompProgram: Sendable {
    public let bytes: [UInt8]
    public var instructionCount: Int { bytes.count / 8 }
}
public func seccompProgramForSandbox(profile: SeccompProfile?, capabilities: CapabilitySet) throws -> SeccompProgram {
    SeccompProgram(bytes: [])
}
