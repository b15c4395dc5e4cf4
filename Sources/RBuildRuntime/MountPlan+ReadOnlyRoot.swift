#if canImport(Glibc)
import Glibc
#endif
import RBuildSystem

/// A root filesystem the user may read but not write (a shared root, root-owned 0755) cannot
/// take the mount points a sandbox needs when the image lacks them (/etc/hosts, a bind target,
/// the workdir). Such a root is run as a throw-away overlay, as podman's `:O` volumes are: the
/// directory is the only lower layer and a tmpfs in the sandbox is the upper, with the missing
/// mount points made in that upper up front (see rb_plan.overlay_skeleton). Nothing in the
/// directory changes. A root the sandbox can write (its owners are mapped) is used as it is.
extension MountPlan {
    /// The skeleton for `rootfs`: upper-relative paths, parents first, "dir/" for directories;
    /// nil when every mount point exists or the user can create it where it is missing.
    static func readOnlyRootSkeleton(rootfs: String, steps: [MountStep], workdir: String,
                                     mapping: IDMapping) -> [String]? {
        var targets: [(path: String, isDirectory: Bool)] = []
        var fresh: [String] = []   // file systems the plan mounts: what lies below them is not the image's
        for s in steps where [.bindHost, .fs, .fsEarly].contains(s.kind) && !s.options.contains(.noCreate) {
            if fresh.contains(where: { s.target.hasPrefix($0 + "/") }) { continue }
            targets.append((s.target, s.options.contains(.targetIsDirectory)))
            if s.kind != .bindHost { fresh.append(s.target) }
        }
        targets.append((workdir, true))

        var entries: [String] = []
        var needed = false
        for t in targets {
            guard let r = resolveInRoot(rootfs, t.path), !r.missing.isEmpty else { continue }
            if sandboxCanWrite(rootfs + "/" + r.existing.joined(separator: "/"), mapping: mapping) { continue }
            needed = true
            let all = r.existing + r.missing
            for i in all.indices {
                let isDir = i < all.count - 1 || t.isDirectory
                let entry = all[...i].joined(separator: "/") + (isDir ? "/" : "")
                if !entries.contains(entry) { entries.append(entry) }
            }
        }
        return needed ? entries : nil
    }

    /// Whether the sandbox's root may create entries in `dir`: we may write it, or it maps the
    /// directory's owner and group, over which it holds CAP_DAC_OVERRIDE (a snapshot's
    /// /home/u1234 under a subordinate range is not ours to write, but the sandbox's).
    static func sandboxCanWrite(_ dir: String, mapping: IDMapping) -> Bool {
        // In rbuild's own namespace we are what the sandbox's root will be: our capabilities
        // cover exactly the owners it maps, so access(2) answers for it (an owner the map lacks
        // shows as the overflow id, 65534, which a test of the map would take for nobody).
        if mapping.nested { return access(dir, W_OK) == 0 }
        if access(dir, W_OK) == 0 { return true }
        var st = stat()
        guard stat(dir, &st) == 0 else { return false }
        func mapped(_ id: UInt32, _ forUIDs: Bool) -> Bool {
            mapping.mapLines(forUIDs: forUIDs).contains { id >= $0.outside && UInt64(id) < UInt64($0.outside) + UInt64($0.count) }
        }
        return mapped(st.st_uid, true) && mapped(st.st_gid, false)
    }

    /// `path` looked up inside `root` as the sandbox will see it (symlinks followed, absolute ones
    /// from `root`, `..` never above it): the components that exist, then those that do not.
    /// nil for a symlink loop. Only a decision is taken from this: the child still resolves every
    /// mount point with RESOLVE_IN_ROOT.
    static func resolveInRoot(_ root: String, _ path: String) -> (existing: [String], missing: [String])? {
        var done: [String] = []
        var todo = pathComponents(path).map(String.init)
        var hops = 0
        while !todo.isEmpty {
            let c = todo.removeFirst()
            if c == "." { continue }
            if c == ".." { _ = done.popLast(); continue }
            let host = root + "/" + (done + [c]).joined(separator: "/")
            var st = stat()
            guard lstat(host, &st) == 0 else {
                var rest: [String] = []
                for m in [c] + todo where m != "." {
                    if m == ".." { _ = rest.popLast() } else { rest.append(m) }
                }
                return (done, rest)
            }
            if (st.st_mode & S_IFMT) == S_IFLNK {
                hops += 1
                guard hops <= 40 else { return nil }
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(host, &buf, buf.count - 1)
                guard n > 0 else { return nil }
                let target = String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.utf8.first == UInt8(ascii: "/") { done = [] }
                todo = pathComponents(target).map(String.init) + todo
            } else {
                done.append(c)
            }
        }
        return (done, [])
    }
}
