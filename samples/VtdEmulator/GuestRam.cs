using System.Runtime.InteropServices;
using Iommu.Memory;

namespace VtdEmulator;

/// <summary>
/// The emulator's guest RAM: one page-aligned host block (2 MiB-aligned, so the host may back it with
/// huge pages) laid out as a PC does, RAM below the PCI hole and the rest above 4 GiB, with the hole
/// (PCI windows, the unit's registers, the interrupt range) left out. The unit reads and writes this
/// block directly through a <see cref="PhysicalMemory"/> over it; nothing is copied.
/// </summary>
public sealed unsafe class GuestRam : IDisposable
{
    /// <summary>Start of the PCI hole: RAM below it, MMIO above.</summary>
    public const ulong HoleStart = 0x6000_0000;

    /// <summary>Where RAM resumes (4 GiB).</summary>
    public const ulong HighStart = 0x1_0000_0000;

    private readonly byte* _host;

    /// <summary>Allocates <paramref name="bytes"/> of guest RAM: up to 1.5 GiB below the hole, the rest from 4 GiB.</summary>
    /// <param name="bytes">RAM bytes; a multiple of 2 MiB greater than 1.5 GiB.</param>
    public GuestRam(ulong bytes)
    {
        _host = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 2 << 20); // the OS commits pages on first touch
        Bytes = bytes;
        ulong high = bytes - HoleStart;
        Memory = new PhysicalMemory(HighStart + high, [
            new HostMemoryRange(0, HoleStart, (nint)_host),
            new HostMemoryRange(HighStart, high, (nint)(_host + HoleStart)),
        ]);
    }

    /// <summary>The unit's view of guest RAM.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>RAM bytes.</summary>
    public ulong Bytes { get; }

    /// <summary>The host address of a guest-physical address in RAM (what the emulator's CPU model would use).</summary>
    /// <param name="gpa">A guest-physical address in RAM.</param>
    /// <returns>The host pointer.</returns>
    public byte* Host(ulong gpa) => gpa < HoleStart ? _host + gpa : _host + HoleStart + (gpa - HighStart);

    /// <summary>Disposes the view (which waits for DMA in flight), then frees the host block.</summary>
    public void Dispose()
    {
        Memory.Dispose();
        NativeMemory.AlignedFree(_host);
    }
}
