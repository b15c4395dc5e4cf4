import CRBuildChild
import RBuildSystem

/// One step of the sandbox's mount plan. The C child executes steps in order; building the list
/// is plain Swift so that the policy can be read and unit-tested without any privilege.
public struct MountStep: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Int32, Sendable {
        case bindHost = 1, fs, fsEarly, mask, readOnly, symlink, binfmt, layered, file
    }
    public struct Options: OptionSet, Sendable, Hashable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let readOnly = Options(rawValue: 1)
        public static let recursive = Options(rawValue: 2)
        public static let targetIsDirectory = Options(rawValue: 4)
        public static let optional = Options(rawValue: 8)
        public static let noCreate = Options(rawValue: 16)
        public static let skipIfReadOnly = Options(rawValue: 32)
    }

    public var kind: Kind
    public var options: Options
    public var source: String?
    public var target: String
    public var fstype: String?
    public var data: String?
    public var flags: UInt
    /// bindHost, layered: the part of the source to mount (resolved inside it).
    public var subpath: String? = nil
    /// layered: the snapshot's overlay (its fuse program included).
    public var overlay: OverlayRoot? = nil
    /// file: the bytes (handed to the child in a memfd), owner and mode.
    public var content: [UInt8]? = nil
    public var owner: (uid: UInt32, gid: UInt32, mode: mode_t) = (0, 0, 0)

    public static func == (a: MountStep, b: MountStep) -> Bool {
        a.kind == b.kind && a.options == b.options && a.source == b.source && a.target == b.target && a.fstype == b.fstype
            && a.data == b.data && a.flags == b.flags && a.subpath == b.subpath && a.overlay == b.overlay
            && a.content == b.content && a.owner == b.owner
    }

    public var description: String {
        switch kind {
        case .bindHost: return "bind \(source ?? "") on \(target)"
        case .fs, .fsEarly: return "mount \(target) (\(fstype ?? ""))"
        case .mask: return "mask \(target)"
        case .readOnly: return "read-only \(target)"
        case .symlink: return "symlink \(target) -> \(source ?? "")"
        case .binfmt: return "binfmt_misc at \(target)"
        case .layered: return "mount a snapshot\(subpath.map { " (its \($0))" } ?? "") on \(target)"
        case .file: return "mount a file on \(target)"
        }
    }
}

/// Paths hidden from every sandbox (runc's and docker's defaults): kernel memory, keys, timing
/// side channels and firmware interfaces.
public let defaultMaskedPaths = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
]

/// Paths visible but read-only in every sandbox.
public let defaultReadOnlyPaths = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]

/// The host device nodes bound into the sandbox's /dev. Nothing else from the host's /dev.
public let sandboxDevices = ["null", "zero", "full", "random", "urandom", "tty"]

enum MountPlan {
    /// The mount points a sandbox for `spec` makes in its root (those not under an earlier
    /// mount): a build step removes the ones it created, so they never reach a layer.
    static func rootMountPoints(_ spec: SandboxSpec) -> [String] {
        // The chroot isolation mounts nothing and takes back what it made (`ChrootRoot`).
        if (try? Isolation.choose(spec.isolation))?.isolation == .chroot { return [] }
        let etc = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"].map { (target: $0, source: "/dev/null") }
        var seen: [String] = []
        for step in build(spec: spec, etcFiles: etc, ttyGroupMapped: false) {
            switch step.kind {
            case .mask, .readOnly, .symlink, .binfmt: continue
            default: break
            }
            if seen.contains(where: { step.target == $0 || step.target.hasPrefix($0 == "/" ? "/" : $0 + "/") }) { continue }
            seen.append(step.target)
        }
        return seen
    }

    static let nosuid = UInt(RB_MS_NOSUID.rawValue), nodev = UInt(RB_MS_NODEV.rawValue), noexec = UInt(RB_MS_NOEXEC.rawValue)

    /// The ordered plan for a spec. `etcFiles` maps /etc/hosts, /etc/hostname, /etc/resolv.conf
    /// to host files prepared for this run; `ttyGroupMapped` says whether gid 5 exists inside.
    /// `ownProc` false (the no-pid sandbox, where the kernel refuses the sandbox a procfs or
    /// sysfs of its own because the outer ones are partly masked): the outer /proc and /sys are
    /// bound read-only, their masks included.
    static func build(spec: SandboxSpec, etcFiles: [(target: String, source: String)],
                      ttyGroupMapped: Bool, binfmtRegistration: String? = nil, ownProc: Bool = true) -> [MountStep] {
        var steps: [MountStep] = []
        func fs(_ type: String, _ target: String, _ data: String?, _ flags: UInt, early: Bool = false,
                _ options: MountStep.Options = []) {
            steps.append(MountStep(kind: early ? .fsEarly : .fs, options: options.union(.targetIsDirectory),
                                   source: nil, target: target, fstype: type, data: data, flags: flags))
        }
        func bind(_ source: String, _ target: String, _ options: MountStep.Options) {
            steps.append(MountStep(kind: .bindHost, options: options, source: source, target: target,
                                   fstype: nil, data: nil, flags: 0))
        }
        func link(_ target: String, _ to: String) {
            steps.append(MountStep(kind: .symlink, options: [], source: to, target: target,
                                   fstype: nil, data: nil, flags: 0))
        }

        if ownProc {
            fs("proc", "/proc", nil, nosuid | nodev | noexec, early: true)
        } else {
            bind("/proc", "/proc", [.recursive, .readOnly, .targetIsDirectory])
        }
        if let binfmtRegistration {
            // Where the host has its binfmt_misc; before /proc/sys is made read-only.
            steps.append(MountStep(kind: .binfmt, options: [.targetIsDirectory, .noCreate], source: nil,
                                   target: "/proc/sys/fs/binfmt_misc", fstype: "binfmt_misc",
                                   data: binfmtRegistration, flags: 0))
        }
        fs("tmpfs", "/dev", "mode=755,size=65536k", nosuid | UInt(RB_MS_STRICTATIME.rawValue))
        for dev in sandboxDevices {
            bind("/dev/" + dev, "/dev/" + dev, dev == "tty" ? [.optional] : [])
        }
        // gid 5 (tty) only exists inside with a subordinate range; asking for it otherwise is EINVAL.
        fs("devpts", "/dev/pts", "newinstance,ptmxmode=0666,mode=0620" + (ttyGroupMapped ? ",gid=5" : ""),
           nosuid | noexec)
        link("/dev/ptmx", "pts/ptmx")
        link("/dev/fd", "/proc/self/fd")
        link("/dev/stdin", "/proc/self/fd/0")
        link("/dev/stdout", "/proc/self/fd/1")
        link("/dev/stderr", "/proc/self/fd/2")
        fs("tmpfs", "/dev/shm", "mode=1777,size=\((spec.shmSize ?? 64 << 20) / 1024)k", nosuid | nodev | noexec)
        fs("mqueue", "/dev/mqueue", nil, nosuid | nodev | noexec)
        if spec.network.hasOwnNamespace && ownProc {
            // A sysfs instance belongs to the mounting network namespace; only a new one can be mounted.
            fs("sysfs", "/sys", nil, nosuid | nodev | noexec, early: true, [.readOnly, .skipIfReadOnly])
        } else {
            bind("/sys", "/sys", [.recursive, .readOnly, .targetIsDirectory, .skipIfReadOnly])
        }
        // An image without these files on a read-only root simply goes without them.
        for (target, source) in etcFiles {
            bind(source, target, [.skipIfReadOnly])
        }
        for m in spec.mounts {
            var o: MountStep.Options = [.recursive]
            if m.readOnly { o.insert(.readOnly) }
            if isDirectory(m.source) { o.insert(.targetIsDirectory) }
            bind(m.source, m.target, o)
        }
        for m in spec.extraMounts {
            switch m {
            case .bind(let source, let subpath, let target, let readOnly):
                var o: MountStep.Options = [.recursive]
                if readOnly { o.insert(.readOnly) }
                if isDirectory(source) { o.insert(.targetIsDirectory) }
                var step = MountStep(kind: .bindHost, options: o, source: source, target: target, fstype: nil, data: nil, flags: 0)
                step.subpath = subpath
                steps.append(step)
            case .root(let root, let subpath, let target, let readOnly, let isDirectory):
                var o: MountStep.Options = [.recursive]
                if readOnly { o.insert(.readOnly) }
                if isDirectory { o.insert(.targetIsDirectory) }
                var step = MountStep(kind: root.overlay == nil ? .bindHost : .layered, options: o, source: root.rootfs,
                                     target: target, fstype: nil, data: nil, flags: 0)
                step.subpath = subpath
                step.overlay = root.overlay
                steps.append(step)
            case .tmpfs(let target, let size):
                fs("tmpfs", target, "mode=1777" + (size.map { ",size=\($0)" } ?? ""), nosuid | nodev)
            case .file(let target, let content, let uid, let gid, let mode):
                var step = MountStep(kind: .file, options: [], source: nil, target: target, fstype: nil, data: nil, flags: 0)
                step.content = content
                step.owner = (uid, gid, mode)
                steps.append(step)
            }
        }
        for p in defaultMaskedPaths {
            steps.append(MountStep(kind: .mask, options: [.optional], source: nil, target: p, fstype: nil, data: nil, flags: 0))
        }
        for p in defaultReadOnlyPaths {
            steps.append(MountStep(kind: .readOnly, options: [.optional], source: nil, target: p, fstype: nil, data: nil, flags: 0))
        }
        return steps
    }
}
