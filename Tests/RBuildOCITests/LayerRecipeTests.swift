import Foundation
import Testing
import RBuildSystem
@testable import RBuildOCI

/// Layers kept as the directory they were packed from (`LayerRecipe`): packed again, they are the
/// same bytes as a stored layer; a changed directory is refused before anything is kept.
struct LayerRecipeTests {
    /// A store with a recipe for a small tree (a file, a directory, a symlink, a hand-given owner).
    func recorded(_ tmp: TempDir) throws -> (ContentStore, LayerResult, String, LayerOptions) {
        let store = try ContentStore(root: tmp.path + "/state")
        let tree = tmp.path + "/state/tree"
        try FileManager.default.createDirectory(atPath: tree + "/d", withIntermediateDirectories: true)
        try Data(String(repeating: "layer bytes\n", count: 1000).utf8).write(to: URL(fileURLWithPath: tree + "/d/f"))
        symlink("d/f", tree + "/link")
        var options = LayerOptions(compression: .none, sourceDateEpoch: 1_700_000_000)
        options.owners = ["d/f": (uid: 1000, gid: 1000)]
        options.storesBlob = false
        let hashed = try writeLayer(fromDirectory: tree, store: store, options: options)
        #expect(store.allBlobs().isEmpty, "hashing stores nothing")
        try store.recordRecipe(hashed.diffID, directory: tree, size: hashed.uncompressedSize, options: options,
                               idMapping: IDMapping.detect().mode)
        return (store, hashed, tree, options)
    }

    @Test func packedAgainItIsTheStoredLayer() throws {
        let tmp = TempDir()
        let (store, hashed, tree, options) = try recorded(tmp)
        #expect(hashed.descriptor.digest == hashed.diffID && hashed.descriptor.size == hashed.uncompressedSize)
        #expect(store.contains(hashed.diffID) && store.size(hashed.diffID) == hashed.uncompressedSize)
        #expect(store.recipe(hashed.diffID)?.directory == "tree", "kept relative to the store's root")
        // gzip straight from the tree: the same bytes as compressing a stored plain layer.
        let packed = try store.pack(hashed.diffID, recipe: store.recipe(hashed.diffID)!, compression: .gzip, level: nil)
        var stored = options
        stored.storesBlob = true
        stored.compression = .gzip
        let other = try ContentStore(root: tmp.path + "/other")
        #expect(try writeLayer(fromDirectory: tree, store: other, options: stored).descriptor == packed.descriptor)
        #expect(try recompressLayer(hashed.descriptor, to: .gzip, level: nil, store: store) == packed.descriptor)
        #expect(!FileManager.default.fileExists(atPath: store.path(hashed.diffID)), "no plain blob on the way")
        // A reader of the plain blob gets it written, verified, and the recipe goes.
        let reader = try BlobReader(store.blob(hashed.descriptor))
        try reader.finish()
        #expect(FileManager.default.fileExists(atPath: store.path(hashed.diffID)) && store.recipe(hashed.diffID) == nil)
    }

    @Test func aChangedTreeIsRefusedAndNothingKept() throws {
        let tmp = TempDir()
        let (store, hashed, tree, _) = try recorded(tmp)
        try Data("changed\n".utf8).write(to: URL(fileURLWithPath: tree + "/d/f"))
        for compression in [Compression.gzip, .none] {
            #expect {
                _ = try store.pack(hashed.diffID, recipe: store.recipe(hashed.diffID)!, compression: compression, level: nil)
            } throws: { e in
                (e as? OCIError)?.code == .diffIDMismatch && "\(e)".contains(hashed.diffID.description)
                    && "\(e)".contains("changed since it was built")
            }
        }
        #expect(throws: OCIError.self) { try BlobReader(store.blob(hashed.descriptor)) }
        #expect(store.allBlobs().isEmpty, "no blob of the wrong bytes")
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp.path + "/state/ingest").isEmpty)
        #expect(store.check(repair: false).bad.map(\.digest) == [hashed.diffID])
    }

    /// An export streams a layer into a header written with the size it was built with: a tree
    /// that grew since is stopped as soon as it passes that size, not only at the digest check.
    @Test func aGrownTreeStopsAnExportAtItsSize() throws {
        let tmp = TempDir()
        let (store, hashed, tree, _) = try recorded(tmp)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: tree + "/d/f"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 0x61, count: 64 << 10))
        try handle.close()
        var streamed: Int64 = 0
        #expect {
            try store.pack(hashed.diffID, recipe: store.recipe(hashed.diffID)!) { streamed += Int64($0.count) }
        } throws: { e in
            (e as? OCIError)?.code == .diffIDMismatch && "\(e)".contains("packs to more than its \(hashed.uncompressedSize) bytes")
        }
        #expect(streamed <= hashed.uncompressedSize, "nothing past the size reached the export")
    }

    @Test func aGoneTreeIsMissingAndPruneDropsRecipesNothingNames() throws {
        let tmp = TempDir()
        let (store, hashed, tree, _) = try recorded(tmp)
        #expect(try store.materialiseRecipes() == 1 && store.allRecipes().isEmpty)
        // Recorded again (a blob exists now: nothing recorded), then without its blob.
        try store.recordRecipe(hashed.diffID, directory: tree, size: hashed.uncompressedSize, options: LayerOptions(),
                               idMapping: .single)
        #expect(store.allRecipes().isEmpty)
        unlink(store.path(hashed.diffID))
        try store.recordRecipe(hashed.diffID, directory: tree, size: hashed.uncompressedSize, options: LayerOptions(),
                               idMapping: .single)
        try FileManager.default.removeItem(atPath: tree)
        #expect(!store.contains(hashed.diffID))
        #expect { _ = try store.pack(hashed.diffID, recipe: store.recipe(hashed.diffID)!, compression: .gzip, level: nil) } throws: { ($0 as? OCIError)?.code == .missingBlob }
        // Young recipes nothing names stay an hour (a step may not have stored its record yet).
        _ = try store.removeBlobs(except: [])
        #expect(store.allRecipes() == [hashed.diffID])
        _ = try store.removeBlobs(except: [], recipeGrace: 0)
        #expect(store.allRecipes().isEmpty)
    }
}
