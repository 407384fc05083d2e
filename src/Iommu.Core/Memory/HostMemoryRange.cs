namespace Iommu.Memory;

/// <summary>
/// A range of physical RAM whose bytes live in memory the caller owns (an emulator's guest RAM): the
/// physical addresses <c>[PhysicalAddress, PhysicalAddress + Length)</c> are the host bytes at
/// <c>[Host, Host + Length)</c>. Like a KVM memory slot.
/// </summary>
/// <param name="PhysicalAddress">First physical address; a multiple of 4 KiB.</param>
/// <param name="Length">Bytes; a non-zero multiple of 4 KiB.</param>
/// <param name="Host">
/// Host address of the first byte; a multiple of 4 KiB (2 MiB lets the host back it with huge pages).
/// The memory must stay valid, readable and writable until the <see cref="PhysicalMemory"/> over it is
/// disposed.
/// </param>
public readonly record struct HostMemoryRange(ulong PhysicalAddress, ulong Length, nint Host);
