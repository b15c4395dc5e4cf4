import RBuildSystem

/// A user as it exists inside the image: ids, supplementary groups and home directory.
public struct ResolvedUser: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    public var home: String
}

/// Looks users and groups up in an image's /etc/passwd and /etc/group, as docker does for USER.
public enum UserDatabase {
    struct PasswdEntry { var name: String; var uid: UInt32; var gid: UInt32; var home: String }
    struct GroupEntry { var name: String; var gid: UInt32; var members: [String] }

    static func parsePasswd(_ text: String) -> [PasswdEntry] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 6, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { return nil }
            return PasswdEntry(name: String(f[0]), uid: uid, gid: gid, home: String(f[5]))
        }
    }

    static func parseGroup(_ text: String) -> [GroupEntry] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", omittingEmptySubsequences: false)
            guard f.count >= 3, let gid = UInt32(f[2]) else { return nil }
            let members = f.count > 3 ? f[3].split(separator: ",").map(String.init) : []
            return GroupEntry(name: String(f[0]), gid: gid, members: members)
        }
    }

    /// Resolves `spec` against the files of `rootfs` (read without leaving it).
    public static func resolve(_ spec: UserSpec, rootfs: String) throws -> ResolvedUser {
        try resolve(spec, roots: [rootfs])
    }

    /// The same over the layers of an overlay, topmost first: each file comes from the first
    /// layer that has it. Whiteouts and symlinks between layers are not seen: a caller with a
    /// view of the merged layers passes its reader to `resolve(_:reading:)` instead.
    public static func resolve(_ spec: UserSpec, roots: [String]) throws -> ResolvedUser {
        try resolve(spec) { path in
            for root in roots {
                do {
                    if let bytes = try readFileInRoot(root: root, path: path) { return bytes }
                } catch let e as SystemError {
                    throw RuntimeError(.rootfsNotFound, "cannot open root filesystem \(root): \(e.text)")
                }
            }
            return nil
        }
    }

    /// Resolves `spec` against the image's /etc/passwd and /etc/group as `read` returns them
    /// (nil: the file is missing, as if empty). `read` must refuse what is not a small regular
    /// file, as `readFileInRoot` does: it throws an `ImageFileError` then.
    public static func resolve(_ spec: UserSpec, reading read: (String) throws -> [UInt8]?) throws -> ResolvedUser {
        func text(_ path: String) throws -> String { String(decoding: try read(path) ?? [], as: UTF8.self) }
        return try resolve(spec, passwd: text("/etc/passwd"), group: text("/etc/group"))
    }

    static func resolve(_ spec: UserSpec, passwd: String, group: String) throws -> ResolvedUser {
        let users = parsePasswd(passwd), groups = parseGroup(group)
        let entry: PasswdEntry?
        let uid: UInt32
        if let numeric = UInt32(spec.user) {
            uid = numeric
            entry = users.first { $0.uid == numeric }
        } else {
            guard let e = users.first(where: { $0.name == spec.user }) else {
                throw RuntimeError(.badUser, "unable to find user \(spec.user): no matching entries in the image's /etc/passwd")
            }
            entry = e
            uid = e.uid
        }
        var gid = entry?.gid ?? 0
        if let g = spec.group {
            if let numeric = UInt32(g) {
                gid = numeric
            } else if let e = groups.first(where: { $0.name == g }) {
                gid = e.gid
            } else {
                throw RuntimeError(.badUser, "unable to find group \(g): no matching entries in the image's /etc/group")
            }
        }
        var extra: [UInt32] = []
        if let name = entry?.name {
            for g in groups where g.members.contains(name) && g.gid != gid && !extra.contains(g.gid) {
                extra.append(g.gid)
            }
        }
        let home = entry?.home ?? (uid == 0 ? "/root" : "/")
        return ResolvedUser(uid: uid, gid: gid, groups: extra, home: home.isEmpty ? "/" : home)
    }
}
