using System.Runtime.InteropServices;

namespace Iommu.Memory;

/// <summary>
/// Zeroed, page-aligned blocks for owned <see cref="PhysicalMemory"/>, mapped straight from the
/// operating system where we can (Linux: an anonymous private <c>mmap</c>), else from the runtime's
/// allocator.
/// </summary>
/// <remarks>
/// Why not <c>malloc</c> (<see cref="NativeMemory"/>): glibc serves a 2 MiB block with <c>mmap</c> only
/// until the process frees one; then its mmap threshold rises and later blocks come from its heap, as
/// pages other allocations used and left scattered in physical memory. Page walks over tables in such
/// blocks ran 30–40% slower than over freshly mapped ones in the same process (most likely a table
/// working set near the L2 size whose scattered physical pages fill some cache sets past their ways), so one platform's
/// speed depended on what the process had freed before it. A fresh anonymous mapping also costs
/// nothing until touched, as the sparse chunks of a large memory need.
/// </remarks>
internal static unsafe partial class OsPages
{
    private const int ProtRead = 0x1, ProtWrite = 0x2;
    private const int MapPrivate = 0x02, MapAnonymousLinux = 0x20;

    /// <summary>Whether blocks come from <c>mmap</c> (Linux) rather than the runtime's allocator.</summary>
    internal static bool Mapped { get; } = OperatingSystem.IsLinux();

    /// <summary>Allocates <paramref name="bytes"/> zeroed bytes, 4 KiB-aligned.</summary>
    /// <param name="bytes">A positive multiple of 4 KiB.</param>
    /// <returns>The block; free it with <see cref="Free"/> and the same size.</returns>
    /// <exception cref="OutOfMemoryException">The system refused the mapping.</exception>
    public static byte* Alloc(nuint bytes) => Mapped ? MapAnonymous(bytes) : AllocZeroedAligned(bytes);

    /// <summary>Frees a block of <see cref="Alloc"/>.</summary>
    /// <param name="block">The block.</param>
    /// <param name="bytes">Its size, as allocated.</param>
    public static void Free(byte* block, nuint bytes)
    {
        if (Mapped)
        {
            // munmap fails only for an argument error, which a block of Alloc with its own size is not.
            _ = Munmap((nint)block, bytes);
            return;
        }

        FreeZeroedAligned(block);
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2201", Justification = "What NativeMemory.Alloc, which this replaces, throws when the system has no memory to give.")]
    private static byte* MapAnonymous(nuint bytes)
    {
        nint p = Mmap(0, bytes, ProtRead | ProtWrite, MapPrivate | MapAnonymousLinux, -1, 0);
        if (p == -1)
        {
            throw new OutOfMemoryException($"mmap of 0x{bytes:x} bytes for physical memory failed (errno {Marshal.GetLastPInvokeError()}).");
        }

        return (byte*)p;
    }

    /// <summary>The other systems' block: calloc, which leaves a large block untouched until used, aligned by hand.</summary>
    /// <param name="bytes">A positive multiple of 4 KiB.</param>
    /// <returns>The block; free it with <see cref="FreeZeroedAligned"/>.</returns>
    internal static byte* AllocZeroedAligned(nuint bytes)
    {
        // calloc's own pointer is kept in the 8 bytes before the aligned start (inside its first page,
        // which its header already touched), so nothing else is committed.
        byte* raw = (byte*)NativeMemory.AllocZeroed(bytes + PhysicalMemory.PageSize);
        byte* aligned = (byte*)(((nuint)raw + (nuint)sizeof(nint) + PhysicalMemory.PageSize - 1) & ~(nuint)(PhysicalMemory.PageSize - 1));
        *(nint*)(aligned - sizeof(nint)) = (nint)raw;
        return aligned;
    }

    /// <summary>Frees a block of <see cref="AllocZeroedAligned"/>.</summary>
    /// <param name="block">The block.</param>
    internal static void FreeZeroedAligned(byte* block) => NativeMemory.Free((void*)*(nint*)(block - sizeof(nint)));

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    /// <summary>
    /// Gives the pages of a block of <see cref="Alloc"/> back to the system but keeps its addresses mapped
    /// (<c>madvise(MADV_DONTNEED)</c>): reads see zeros and a write backs a fresh page, never a fault. Only
    /// for <see cref="Mapped"/> blocks; <see cref="Free"/> still unmaps the block later.
    /// </summary>
    /// <param name="block">The block.</param>
    /// <param name="bytes">Its size, as allocated.</param>
    public static void Discard(byte* block, nuint bytes) => _ = Madvise((nint)block, bytes, MadvDontNeed);

    private const int MadvDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(nint addr, nuint length);

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint addr, nuint length, int advice);
}
