import Foundation
import RBuildSystem

// One copy of a built layer's bytes.
//
// A layer a build step makes exists first as a directory (an overlay upper directory, a COPY's
// staging tree) that the overlay snapshotters keep as that layer's snapshot. Storing its tar as a
// blob too would hold every byte twice (issue 22: a 1 GiB COPY grew the state dir by 2.15 GB).
// So where the snapshotter keeps the directory exactly as it was packed, the build only hashes
// the tar (its diffID and size, which the image config and the cache key need) and records here
// how to pack it again: the directory, SOURCE_DATE_EPOCH, the id map's mode and the owners a COPY
// gave by hand. The blob `sha256:<diffID>` is then made when something asks for its bytes — an
// export or push converts it straight into its compressed form (remembered in the cache index,
// so once per compression), anything else gets the plain blob written into the store first —
// and every repack is checked against the diffID before a byte of it is stored: a directory that
// changed since fails, naming the layer and what to do. Where no such directory is kept (the
// copy snapshotter keeps whole roots, an overlay whose upper directories live off the state
// dir's filesystem converts whiteouts when it commits), the blob is stored as before.

/// How to pack a layer whose bytes the store keeps only as a snapshot directory.
public struct LayerRecipe: Codable, Sendable, Equatable {
    /// The layer's tree, relative to the store's root when inside it (a committed overlay layer,
    /// `snapshots/overlay/layers/<diffID>/fs`), else absolute.
    public var directory: String
    /// The uncompressed tar's size.
    public var size: Int64
    public var sourceDateEpoch: Int64?
    /// The id map whose mode turned the tree's owners into recorded ids (`IDMapping.insideID`).
    public var idMapping: IDMappingMode
    /// Owners recorded by path where they are not what the map gives (COPY --chown, owners a
    /// copied stage kept): `[uid, gid]`.
    public var owners: [String: [UInt32]]

    public init(directory: String, size: Int64, options: LayerOptions, idMapping: IDMappingMode) {
        self.directory = directory
        self.size = size
        sourceDateEpoch = options.sourceDateEpoch
        self.idMapping = idMapping
        owners = options.owners.filter { $0.value != (0, 0) }.mapValues { [$0.uid, $0.gid] }
    }

    /// The options that pack the directory into the same tar again, as `compression`.
    func options(compression: Compression, level: Int?, expected: Digest) -> LayerOptions {
        var o = LayerOptions(compression: compression, level: level, sourceDateEpoch: sourceDateEpoch)
        o.owners = owners.compactMapValues { $0.count == 2 ? (uid: $0[0], gid: $0[1]) : nil }
        // The map of this process (rbuild's own user namespace or the host), in the recorded
        // mode: the same inside ids as the build recorded, whichever side reads the tree.
        o.mapOwners(through: IDMapping.detect(force: idMapping))
        o.expectedDiffID = expected
        return o
    }
}

extension ContentStore {
    func recipePath(_ d: Digest) -> String { layout.layerRecipes + "/" + d.hex }

    /// Records that blob `diffID` (an uncompressed layer of `size` bytes) is `directory` packed
    /// with `options` (`storesBlob` false): written whole (temp file + rename), so a reader sees
    /// it complete or not at all.
    public func recordRecipe(_ diffID: Digest, directory: String, size: Int64, options: LayerOptions,
                             idMapping: IDMappingMode) throws {
        if access(path(diffID), F_OK) == 0 { return }
        try makeDirectory(layout.layerRecipes)
        let base = absolutePath(root) + "/"
        let dir = absolutePath(directory)
        let recipe = LayerRecipe(directory: dir.hasPrefix(base) ? String(dir.dropFirst(base.count)) : dir, size: size,
                                 options: options, idMapping: idMapping)
        let tmp = layout.ingest + "/recipe-\(diffID.hex.prefix(16))-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try writeFile(tmp, try canonicalJSON(recipe))
        guard rename(tmp, recipePath(diffID)) == 0 else {
            let e = errno
            unlink(tmp)
            throw OCIError(.io, "cannot record how to pack layer \(diffID) in \(layout.layerRecipes): \(String(cString: strerror(e)))")
        }
    }

    /// The recipe of `d`, when the store keeps that layer as a directory (nil when it has none,
    /// or a damaged one, which `removeBlobs` clears).
    public func recipe(_ d: Digest) -> LayerRecipe? {
        guard let bytes = FileManager.default.contents(atPath: recipePath(d)) else { return nil }
        return try? JSONDecoder().decode(LayerRecipe.self, from: bytes)
    }

    /// The absolute directory a recipe packs.
    func recipeDirectory(_ r: LayerRecipe) -> String {
        r.directory.hasPrefix("/") ? r.directory : absolutePath(root) + "/" + r.directory
    }

    /// The recipe of `d` when `d` has no blob file but a recipe whose directory is there: a layer
    /// to pack from its snapshot (read once, then handed to `pack`).
    public func packableRecipe(_ d: Digest) -> LayerRecipe? {
        guard access(path(d), F_OK) != 0, let r = recipe(d), access(recipeDirectory(r), F_OK) == 0 else { return nil }
        return r
    }

    /// Packs the layer `d` from its recipe as `compression`, checked against `d` (its diffID)
    /// before the blob is stored.
    public func pack(_ d: Digest, recipe: LayerRecipe, compression: Compression, level: Int?) throws -> LayerResult {
        try pack(d, recipe: recipe, options: { $0.options(compression: compression, level: level, expected: d) }, forward: nil)
    }

    /// Packs the uncompressed layer `d` from its recipe into `body` (an
    /// export's file or stream), storing nothing. `body` may have had bytes when the check fails
    /// (against `d`, and against the size the layer was built with, so that a header written
    /// with that size is never overrun), so its output must be thrown away then: exports write
    /// to a temp file renamed only on success.
    public func pack(_ d: Digest, recipe: LayerRecipe, into body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try withoutActuallyEscaping(body) { body in
            var written: Int64 = 0
            let size = recipe.size
            _ = try pack(d, recipe: recipe, options: {
                var o = $0.options(compression: .none, level: nil, expected: d)
                o.storesBlob = false
                return o
            }, forward: { bytes in
                written += Int64(bytes.count)
                guard written <= size else {
                    // Worded for the message `pack` wraps it in.
                    throw OCIError(.diffIDMismatch, "it packs to more than its \(size) bytes")
                }
                try body(bytes)
            })
        }
    }

    func pack(_ d: Digest, recipe r: LayerRecipe, options: (LayerRecipe) -> LayerOptions,
              forward: ((UnsafeRawBufferPointer) throws -> Void)?) throws -> LayerResult {
        let dir = recipeDirectory(r)
        guard access(dir, F_OK) == 0 else {
            throw OCIError(.missingBlob, "layer \(d) is kept only as the snapshot directory \(dir), which is gone: build the image again (its steps run again and keep it anew)")
        }
        do {
            return try packDirectory(dir, base: nil, store: self, options: options(r), forward: forward)
        } catch let e as OCIError where e.code == .diffIDMismatch {
            throw OCIError(.diffIDMismatch, "layer \(d) cannot be packed again from its snapshot \(dir), which changed since it was built (\(e.message)): run `rbuild prune --all`, then build the image again")
        }
    }

    /// Writes the plain blob of a layer kept as a directory, then drops the recipe. Returns
    /// false when `d` has no recipe (nothing to do).
    @discardableResult
    public func materialise(_ d: Digest) throws -> Bool {
        if access(path(d), F_OK) == 0 { return false }
        guard let r = recipe(d) else { return false }
        _ = try pack(d, recipe: r, compression: .none, level: nil)
        unlink(recipePath(d))
        return true
    }

    /// Every layer kept only as a directory turned into a plain blob: before snapshots are
    /// removed (`rbuild prune --all`), so that what images and cached steps name survives them.
    /// Returns how many were written.
    public func materialiseRecipes() throws -> Int {
        var n = 0
        for d in allRecipes() where try materialise(d) { n += 1 }
        return n
    }

    public func allRecipes() -> [Digest] { digests(namedIn: layout.layerRecipes) }
}
