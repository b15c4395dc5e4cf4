import Foundation

/// What `rbuild check` found: every blob re-hashed, the bad ones listed.
public struct StoreCheck: Sendable {
    /// A blob whose bytes are not what its name says.
    public struct BadBlob: Sendable {
        public var digest: Digest
        /// What its bytes hash to (nil when they could not all be read).
        public var actual: Digest?
        public var size: Int64
        /// The error a reader of it gets.
        public var problem: String
        /// The local images that use it (and are incomplete once it is removed).
        public var images: [String]
        /// Removed by a repair.
        public var removed: Bool
        /// A layer kept as its snapshot (`LayerRecipe`): it has no bytes of its own to hash, so
        /// `problem` (its repack's error) says what is wrong.
        public var keptAsSnapshot = false
    }

    public var checked = 0
    public var bad: [BadBlob] = []
}

extension ContentStore {
    /// Re-hashes every blob, and packs again every layer kept as a snapshot directory. With
    /// `repair`, removes the bad ones: what used them then reports a missing blob (pull, import
    /// or build again) instead of handing out wrong bytes.
    public func check(repair: Bool) -> StoreCheck {
        var report = StoreCheck()
        for d in allBlobs() {
            report.checked += 1
            var reader: BlobReader?
            do {
                reader = try BlobReader(blob(d))
                try reader?.finish()
                continue
            } catch let e as OCIError where e.code == .missingBlob {
                continue   // removed meanwhile (a concurrent prune)
            } catch {
                var bad = StoreCheck.BadBlob(digest: d, actual: reader?.actual, size: size(d) ?? 0, problem: "\(error)",
                                             images: [], removed: false)
                if repair { bad.removed = unlink(path(d)) == 0 || errno == ENOENT }
                report.bad.append(bad)
            }
        }
        // A layer kept as its snapshot (`LayerRecipe`) is checked by packing it again (hashed,
        // nothing stored); a repair removes the recipe, so the image then reports it missing.
        for d in allRecipes() where access(path(d), F_OK) != 0 {
            report.checked += 1
            let r = recipe(d)
            do {
                guard let r else { throw OCIError.missing(d, store: root) }
                try pack(d, recipe: r) { _ in }
            } catch {
                var bad = StoreCheck.BadBlob(digest: d, actual: nil, size: r?.size ?? 0, problem: "\(error)",
                                             images: [], removed: false, keptAsSnapshot: true)
                if repair { bad.removed = unlink(recipePath(d)) == 0 || errno == ENOENT }
                report.bad.append(bad)
            }
        }
        return report
    }
}

extension ImageStore {
    /// `ContentStore.check`, each bad blob with the names of the images that use it.
    public func check(repair: Bool) throws -> StoreCheck {
        // Who uses what, read before a repair removes anything (a bad manifest counts as its
        // image's own top blob: what it names cannot be read).
        var users: [Digest: [String]] = [:]
        for (name, top) in try list() {
            for d in (try? closure(of: top))?.map(\.digest) ?? [top.digest] { users[d, default: []].append(name) }
        }
        var report = content.check(repair: repair)
        for i in report.bad.indices { report.bad[i].images = users[report.bad[i].digest] ?? [] }
        return report
    }
}
