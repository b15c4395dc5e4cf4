import CSeccomp
@testable import RBuildRuntime

/// What a seccomp filter answers to one system call.
enum SeccompVerdict: Equatable, CustomStringConvertible {
    case allow
    case errno(Int32)
    case kill
    case other(UInt32)

    init(_ ret: UInt32) {
        switch ret & 0xFFFF_0000 {
        case 0x7FFF_0000: self = .allow
        case 0x0005_0000: self = .errno(Int32(ret & 0xFFFF))
        case 0x0000_0000, 0x8000_0000: self = .kill
        default: self = .other(ret)
        }
    }

    var description: String {
        switch self {
        case .allow: return "allow"
        case .errno(let e): return "errno \(e)"
        case .kill: return "kill"
        case .other(let r): return "0x\(String(r, radix: 16))"
        }
    }
}

extension SeccompProgram {
    /// Runs the filter on one call, as the kernel would, without loading it: a classic-BPF
    /// interpreter for the instructions libseccomp emits, over a `struct seccomp_data`
    /// (nr, arch, instruction pointer, six 64-bit arguments; little-endian, as on every host
    /// rbuild builds on). `arch` is libseccomp's name (SCMP_ARCH_X86), `name` a system call
    /// of that ABI that libseccomp can name (on i386 it names socket() only as socketcall's
    /// multiplexed form: use `run` with the number).
    func verdict(_ arch: String, _ name: String, _ args: [UInt64] = []) throws -> SeccompVerdict {
        let token = try SeccompProfile.archToken(arch)
        let nr = seccomp_syscall_resolve_name_arch(token, name)
        guard nr >= 0 else { throw BPFError(message: "\(name) is not a system call of \(arch)") }
        // The kernel reports x32 calls as x86_64 ones whose number has bit 30 set.
        let audit = arch == "SCMP_ARCH_X32" ? try SeccompProfile.archToken("SCMP_ARCH_X86_64") : token
        return SeccompVerdict(try run(arch: audit, nr: nr, args: args))
    }

    struct BPFError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    func run(arch: UInt32, nr: Int32, args: [UInt64]) throws -> UInt32 {
        var data = [UInt8](repeating: 0, count: 64)
        func put(_ v: UInt64, at offset: Int, bytes: Int) {
            for i in 0..<bytes { data[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
        }
        put(UInt64(UInt32(bitPattern: nr)), at: 0, bytes: 4)
        put(UInt64(arch), at: 4, bytes: 4)
        for (i, a) in args.prefix(6).enumerated() { put(a, at: 16 + 8 * i, bytes: 8) }
        func word(_ offset: UInt32) throws -> UInt32 {
            guard offset % 4 == 0, offset + 4 <= 64 else { throw BPFError(message: "load at \(offset)") }
            let o = Int(offset)
            return UInt32(data[o]) | UInt32(data[o + 1]) << 8 | UInt32(data[o + 2]) << 16 | UInt32(data[o + 3]) << 24
        }

        let count = bytes.count / 8
        var a: UInt32 = 0, x: UInt32 = 0
        var mem = [UInt32](repeating: 0, count: 16)
        var pc = 0
        while pc < count {
            let b = Array(bytes[pc * 8..<pc * 8 + 8])
            let code = UInt16(b[0]) | UInt16(b[1]) << 8
            let jt = Int(b[2]), jf = Int(b[3])
            let k = UInt32(b[4]) | UInt32(b[5]) << 8 | UInt32(b[6]) << 16 | UInt32(b[7]) << 24
            pc += 1
            let src = code & 0x08 == 0 ? k : x
            switch code & 0x07 {
            case 0x00, 0x01:   // BPF_LD, BPF_LDX (32-bit words only, as seccomp allows)
                let value: UInt32
                switch code & 0xE0 {
                case 0x00: value = k                                   // BPF_IMM
                case 0x20 where code & 0x18 == 0: value = try word(k)  // BPF_ABS, BPF_W
                case 0x60: value = mem[Int(k & 15)]                    // BPF_MEM
                case 0x80: value = 64                                  // BPF_LEN
                default: throw BPFError(message: "load mode 0x\(String(code, radix: 16)) at \(pc - 1)")
                }
                if code & 0x07 == 0 { a = value } else { x = value }
            case 0x02: mem[Int(k & 15)] = a                            // BPF_ST
            case 0x03: mem[Int(k & 15)] = x                            // BPF_STX
            case 0x04:                                                 // BPF_ALU
                switch code & 0xF0 {
                case 0x00: a = a &+ src
                case 0x10: a = a &- src
                case 0x20: a = a &* src
                case 0x30: a = src == 0 ? 0 : a / src
                case 0x40: a |= src
                case 0x50: a &= src
                case 0x60: a = src < 32 ? a << src : 0
                case 0x70: a = src < 32 ? a >> src : 0
                case 0x80: a = 0 &- a
                case 0x90: a = src == 0 ? 0 : a % src
                case 0xA0: a ^= src
                default: throw BPFError(message: "alu op 0x\(String(code, radix: 16)) at \(pc - 1)")
                }
            case 0x05:                                                 // BPF_JMP
                let taken: Bool
                switch code & 0xF0 {
                case 0x00: pc += Int(k); continue                      // BPF_JA
                case 0x10: taken = a == src
                case 0x20: taken = a > src
                case 0x30: taken = a >= src
                case 0x40: taken = a & src != 0
                default: throw BPFError(message: "jump op 0x\(String(code, radix: 16)) at \(pc - 1)")
                }
                pc += taken ? jt : jf
            case 0x06: return code & 0x18 == 0x10 ? a : k              // BPF_RET (A or K)
            default:                                                   // BPF_MISC
                if code & 0xF8 == 0 { x = a } else { a = x }
            }
        }
        throw BPFError(message: "the program ran off its end")
    }
}
