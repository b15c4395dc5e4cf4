#if canImport(Glibc)
import Glibc
#endif
import CRBuildChild
import CSeccomp
import Foundation
import RBuildSystem

/// Single-id mode's answer to programs that change ids (fakeroot's idea, through seccomp user
/// notification instead of LD_PRELOAD): only uid 0 exists in the sandbox, so the kernel cannot
/// honour `setresuid(42, …)`. The filter sends the id setters and getters here; we keep the ids
/// each process asked for and answer the getters from them, so apt's check that its drop to
/// `_apt` took (getgid() == 65534, getgroups() == [65534]) passes. Nothing really changes: every
/// process stays uid 0 and every file it makes is 0:0.
///
/// A process first seen takes the ids of its parent (fork and exec keep ids), or 0s. One thread
/// of its own answers; it ends when no task uses the filter any more or on `stop()`.
final class FakeIDs: @unchecked Sendable {
    struct IDs {
        var uid: [UInt32] = [0, 0, 0, 0]   // real, effective, saved, filesystem
        var gid: [UInt32] = [0, 0, 0, 0]
        var groups: [UInt32] = [0]
    }

    private let socket: Int32
    private var stopPipe: [Int32] = [-1, -1]
    private let done = DispatchSemaphore(value: 0)
    /// Keyed by thread-group id, with the process's start time so that a reused pid starts afresh.
    private var table: [Int32: (start: String, ids: IDs)] = [:]
    private var names: [UInt64: String] = [:]

    /// Takes ownership of `socket`, the parent's end of rb_child.notify_fd.
    init(socket: Int32) {
        self.socket = socket
        _ = stopPipe.withUnsafeMutableBufferPointer { pipe($0.baseAddress!) }
        for fd in stopPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let thread = Thread { [self] in
            serve()
            done.signal()
        }
        thread.name = "rbuild fake ids"
        thread.start()
    }

    /// Ends the thread (after the sandbox is reaped) and waits for it.
    func stop() {
        var one: UInt8 = 1
        _ = write(stopPipe[1], &one, 1)
        done.wait()
        close(stopPipe[0])
        close(stopPipe[1])
    }

    private func serve() {
        defer { close(socket) }
        let listener = rb_recv_fd(socket)
        guard listener >= 0 else { return }   // the child failed before loading its filter
        defer { close(listener) }
        var n = rb_notif()
        while rb_notif_wait(listener, stopPipe[0]) == 1 {
            guard rb_notif_recv(listener, &n) == 0 else { continue }
            let (value, error) = answer(n)
            _ = rb_notif_respond(listener, n.id, value, error)
        }
    }

    /// The call's name, the 32-bit ABI's `…32` suffix dropped (`getuid32` is `getuid`); looked
    /// up once per architecture and number.
    private func name(_ n: rb_notif) -> String {
        let key = UInt64(n.arch) << 32 | UInt64(UInt32(bitPattern: n.nr))
        if let known = names[key] { return known }
        guard let p = seccomp_syscall_resolve_num_arch(n.arch, n.nr) else { return "" }
        defer { free(p) }
        let s = String(cString: p).replacingOccurrences(of: "32", with: "")
        names[key] = s
        return s
    }

    /// The call's return value, or a positive errno.
    func answer(_ n: rb_notif) -> (Int64, Int32) {
        let pid = Int32(bitPattern: n.pid)
        guard let (tgid, ppid) = FakeIDs.threadGroupAndParent(of: pid) else { return (0, ESRCH) }
        var ids = lookup(tgid, parent: ppid)
        let a = (0..<6).map { i in withUnsafeBytes(of: n.args) { $0.load(fromByteOffset: i * 8, as: UInt64.self) } }
        let id = a.map { UInt32(truncatingIfNeeded: $0) }
        let unchanged = UInt32.max   // -1: leave this one as it is
        var result: Int64 = 0
        let call = name(n)
        switch call {
        case "getuid": return (Int64(ids.uid[0]), 0)
        case "geteuid": return (Int64(ids.uid[1]), 0)
        case "getgid": return (Int64(ids.gid[0]), 0)
        case "getegid": return (Int64(ids.gid[1]), 0)
        case "getresuid", "getresgid":
            let three = call.hasPrefix("getresuid") ? ids.uid : ids.gid
            for i in 0..<3 {
                var v = three[i]
                if rb_mem_write(pid, a[i], &v, 4) != 0 { return (0, EFAULT) }
            }
            return (0, 0)
        case "getgroups":
            let size = Int(Int32(truncatingIfNeeded: a[0]))
            if size == 0 { return (Int64(ids.groups.count), 0) }
            guard size >= ids.groups.count else { return (0, EINVAL) }
            let rc = ids.groups.withUnsafeBytes { rb_mem_write(pid, a[1], $0.baseAddress, $0.count) }
            return rc == 0 ? (Int64(ids.groups.count), 0) : (0, EFAULT)
        case "setuid", "setgid":
            let isUID = call.hasPrefix("setuid")
            var v = isUID ? ids.uid : ids.gid
            // As root (fake euid 0) all four change; otherwise only the effective and fs ones.
            v = ids.uid[1] == 0 ? [id[0], id[0], id[0], id[0]] : [v[0], id[0], v[2], id[0]]
            if isUID { ids.uid = v } else { ids.gid = v }
        case "setreuid", "setregid":
            let isUID = call.hasPrefix("setreuid")
            var v = isUID ? ids.uid : ids.gid
            let oldReal = v[0]
            if id[0] != unchanged { v[0] = id[0] }
            if id[1] != unchanged { v[1] = id[1] }
            // setreuid(2): the saved id follows the effective one when the real one is set or the
            // effective one becomes other than the old real one.
            if id[0] != unchanged || (id[1] != unchanged && id[1] != oldReal) { v[2] = v[1] }
            v[3] = v[1]
            if isUID { ids.uid = v } else { ids.gid = v }
        case "setresuid", "setresgid":
            let isUID = call.hasPrefix("setresuid")
            var v = isUID ? ids.uid : ids.gid
            for i in 0..<3 where id[i] != unchanged { v[i] = id[i] }
            v[3] = v[1]
            if isUID { ids.uid = v } else { ids.gid = v }
        case "setfsuid", "setfsgid":
            // Returns the previous fs id; -1 only asks.
            let isUID = call.hasPrefix("setfsuid")
            result = Int64(isUID ? ids.uid[3] : ids.gid[3])
            if id[0] != unchanged { if isUID { ids.uid[3] = id[0] } else { ids.gid[3] = id[0] } }
        case "setgroups":
            let count = Int(truncatingIfNeeded: a[0])
            guard count >= 0 && count <= 65536 else { return (0, EINVAL) }
            var list = [UInt32](repeating: 0, count: count)
            if count > 0 {
                let rc = list.withUnsafeMutableBytes { rb_mem_read(pid, a[1], $0.baseAddress, $0.count) }
                if rc != 0 { return (0, EFAULT) }
            }
            ids.groups = list
        default:
            return (0, ENOSYS)
        }
        table[tgid]?.ids = ids
        return (result, 0)
    }

    /// The ids of process `tgid`: its own, else (first seen) its parent's, else 0s.
    private func lookup(_ tgid: Int32, parent ppid: Int32) -> IDs {
        guard let start = FakeIDs.startTime(of: tgid) else { return IDs() }
        if let entry = table[tgid], entry.start == start { return entry.ids }
        var ids = IDs()
        if let parent = table[ppid], parent.start == FakeIDs.startTime(of: ppid) {
            ids = parent.ids
        }
        table[tgid] = (start, ids)
        return ids
    }

    /// Tgid and PPid of a thread, from one read of /proc/TID/status.
    static func threadGroupAndParent(of tid: Int32) -> (Int32, Int32)? {
        guard let text = procFile("/proc/\(tid)/status") else { return nil }
        var tgid: Int32?, ppid: Int32?
        for line in text.split(separator: "\n") where tgid == nil || ppid == nil {
            if line.hasPrefix("Tgid:") { tgid = Int32(line.dropFirst(5).trimmingCharacters(in: .whitespaces)) }
            if line.hasPrefix("PPid:") { ppid = Int32(line.dropFirst(5).trimmingCharacters(in: .whitespaces)) }
        }
        guard let tgid, let ppid else { return nil }
        return (tgid, ppid)
    }

    /// A small /proc file, read with one open and few reads (no Foundation file machinery: this
    /// runs for every faked id call).
    static func procFile(_ path: String) -> Substring? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let bytes = try? readAll(fd, limit: 16384, path: path) else { return nil }
        return String(decoding: bytes, as: UTF8.self)[...]
    }

    /// Field 22 of /proc/PID/stat (after the command name, which may hold spaces and parens).
    static func startTime(of pid: Int32) -> String? {
        guard let text = procFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }
}
