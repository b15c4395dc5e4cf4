#if canImport(Glibc)
import Glibc
#endif
import Foundation
import RBuildSystem

/// A CPU architecture whose Linux binaries rbuild can run, named as qemu names it.
public enum Architecture: String, CaseIterable, Sendable, Codable {
    case x86_64, i386, aarch64, arm, riscv64, ppc64le, s390x

    /// The architecture of this machine (`uname -m`, read as `Platform.host` reads it).
    public static let host: Architecture = Architecture(platform: Platform.host) ?? .x86_64

    /// From an OCI platform such as `linux/arm64`, `linux/arm/v7`, `linux/386` (or just `arm64`),
    /// read with the one platform parser (its aliases: x86_64, aarch64, armhf…).
    public init?(platform: String) {
        guard let p = try? Platform(parsing: platform) else { return nil }
        self.init(platform: p)
    }

    public init?(platform p: Platform) {
        let n = p.normalized
        guard n.os == "linux" else { return nil }
        switch n.architecture {
        case "amd64": self = .x86_64
        case "386": self = .i386
        case "arm64": self = .aarch64
        case "arm": self = .arm
        case "riscv64": self = .riscv64
        case "ppc64le": self = .ppc64le
        case "s390x": self = .s390x
        default: return nil
        }
    }

    /// The OCI platform name.
    public var platform: String {
        switch self {
        case .x86_64: return "linux/amd64"
        case .i386: return "linux/386"
        case .aarch64: return "linux/arm64"
        case .arm: return "linux/arm/v7"
        case .riscv64: return "linux/riscv64"
        case .ppc64le: return "linux/ppc64le"
        case .s390x: return "linux/s390x"
        }
    }

    /// Whether a CPU of `host` runs these binaries without an emulator.
    public func isNative(on host: Architecture) -> Bool {
        self == host || (host == .x86_64 && self == .i386)
    }

    /// The ELF header bytes a binfmt_misc magic rule matches, and its mask (from the ELF
    /// specification: class, data encoding, version, then e_type ET_EXEC/ET_DYN and e_machine).
    var elfMagic: (magic: [UInt8], mask: [UInt8]) {
        let elf: [UInt8] = [0x7f, 0x45, 0x4c, 0x46]
        let pad = [UInt8](repeating: 0, count: 8)
        // OSABI (byte 7) is ignored; e_type's low bit is ignored so both 2 (EXEC) and 3 (DYN) match.
        let mask64le: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00] + [UInt8](repeating: 0xff, count: 8) + [0xfe, 0xff, 0xff, 0xff]
        let maskBE: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00] + [UInt8](repeating: 0xff, count: 8) + [0xff, 0xfe, 0xff, 0xff]
        func le(_ cls: UInt8, _ machine: UInt8) -> [UInt8] { elf + [cls, 0x01, 0x01, 0x00] + pad + [0x02, 0x00, machine, 0x00] }
        switch self {
        case .x86_64: return (le(2, 0x3e), mask64le)
        case .i386: return (le(1, 0x03), mask64le)
        case .aarch64: return (le(2, 0xb7), mask64le)
        case .arm: return (le(1, 0x28), mask64le)
        case .riscv64: return (le(2, 0xf3), mask64le)
        case .ppc64le: return (le(2, 0x15), mask64le)
        case .s390x: return (elf + [0x02, 0x02, 0x01, 0x00] + pad + [0x00, 0x02, 0x00, 0x16], maskBE)
        }
    }

    /// The line written to binfmt_misc's `register` for `interpreter`, with the F (fix binary)
    /// flag — the kernel opens the interpreter now, so it need not exist inside the root — and P
    /// (preserve argv[0]), which qemu reads from AT_FLAGS: without it every program gets its path
    /// as argv[0], and busybox's shell, which runs applets as /proc/self/exe with argv[0] naming
    /// the applet, runs itself instead of `cat` (the flags Debian's qemu-user-static registers).
    func binfmtRegistration(interpreter: String) -> String {
        func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "\\x%02x", $0) }.joined() }
        let (magic, mask) = elfMagic
        return ":rbuild-\(rawValue):M::\(hex(magic)):\(hex(mask)):\(interpreter):PF"
    }
}

/// How a sandbox runs binaries of an architecture.
public enum EmulationMode: Sendable, Equatable {
    case native
    /// A private binfmt_misc in the sandbox's user namespace registers `interpreter` (Linux 6.7+).
    case userNamespaceBinfmt(interpreter: String)
    /// The host administrator registered a handler (`name` under /proc/sys/fs/binfmt_misc).
    case hostBinfmt(name: String)

    public var summary: String {
        switch self {
        case .native: return "native"
        case .userNamespaceBinfmt(let q): return "emulated: \(q) registered in the sandbox's own binfmt_misc"
        case .hostBinfmt(let n): return "emulated: host binfmt handler \(n)"
        }
    }
}

public enum Emulation {
    /// Where qemu-user-static's interpreters are looked for. `RBUILD_QEMU_DIR` replaces the list.
    static var searchDirectories: [String] {
        if let dir = ProcessInfo.processInfo.environment["RBUILD_QEMU_DIR"] { return [dir] }
        return ["/usr/bin", "/usr/local/bin", "/usr/libexec/qemu-binfmt"]
    }

    static func findInterpreter(_ arch: Architecture) -> String? {
        for dir in searchDirectories {
            let path = "\(dir)/qemu-\(arch.rawValue)-static"
            if access(path, X_OK) == 0 { return path }
        }
        return nil
    }

    /// The host handler for `arch`, if one is registered and enabled.
    static func hostHandler(_ arch: Architecture, dir: String = "/proc/sys/fs/binfmt_misc") -> String? {
        HostReport.hostBinfmtHandlers(dir: dir).first {
            $0.enabled && ($0.name == "qemu-\(arch.rawValue)" || $0.interpreter.hasSuffix("qemu-\(arch.rawValue)")
                           || $0.interpreter.hasSuffix("qemu-\(arch.rawValue)-static"))
        }?.name
    }

    /// Decides how to run `arch` here, or says exactly what is missing — before anything runs.
    public static func mode(for arch: Architecture, host: Architecture = .host,
                            kernel: KernelVersion = .current) throws -> EmulationMode {
        if arch.isNative(on: host) { return .native }
        let interpreter = findInterpreter(arch)
        if kernel >= KernelVersion(6, 7), let interpreter {
            return .userNamespaceBinfmt(interpreter: interpreter)
        }
        if let handler = hostHandler(arch) { return .hostBinfmt(name: handler) }
        if interpreter == nil {
            throw RuntimeError(.hostUnsupported,
                "cannot run \(arch.platform) binaries: qemu-\(arch.rawValue)-static was not found in \(searchDirectories.joined(separator: ", ")); install it with `apt install qemu-user-static`")
        }
        throw RuntimeError(.hostUnsupported,
            "cannot run \(arch.platform) binaries: Linux \(kernel) has no binfmt_misc per user namespace (6.7 or newer) and the host has no handler registered for \(arch.rawValue); upgrade the kernel, or have an administrator install qemu-user-static with binfmt-support")
    }
}
