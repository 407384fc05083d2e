using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using Iommu.Memory;

namespace Iommu.Internal;

/// <summary>
/// The assembly's throw sites, one method per failure: they keep message formatting out of hot methods
/// (so those stay small and inlinable) and give each failure one wording.
/// </summary>
internal static class ThrowHelper
{
    [DoesNotReturn]
    public static void PhysicalRange(ulong pa, ulong length, ulong size) =>
        throw new ArgumentOutOfRangeException(
            nameof(pa),
            string.Create(CultureInfo.InvariantCulture, $"Physical range [0x{pa:x}, 0x{pa + length:x}) lies outside physical memory [0x0, 0x{size:x})."));

    [DoesNotReturn]
    public static void PhysicalHole(ulong pa, ulong length) =>
        throw new ArgumentOutOfRangeException(
            nameof(pa),
            string.Create(CultureInfo.InvariantCulture, $"Physical range [0x{pa:x}, 0x{pa + length:x}) is not RAM: it reaches a hole between the RAM ranges of this caller-owned memory (see PhysicalMemory.HostRanges)."));

    [DoesNotReturn]
    public static void Misaligned(string what, ulong value, ulong alignment) =>
        throw new ArgumentException(
            string.Create(CultureInfo.InvariantCulture, $"{what} 0x{value:x} is not aligned to 0x{alignment:x}."), what);

    [DoesNotReturn]
    public static void CrossesChunk(ulong pa, int length) =>
        throw new ArgumentException(
            string.Create(CultureInfo.InvariantCulture, $"Range [0x{pa:x}, 0x{pa + (ulong)length:x}) crosses a 2 MiB chunk boundary; use Read/Write."), nameof(length));

    [DoesNotReturn]
    public static void ClaimOverlaps(string description, ulong start, ulong size, string otherDescription, ulong otherStart, ulong otherSize) =>
        throw new ArgumentException(
            string.Create(CultureInfo.InvariantCulture, $"{description} [0x{start:x}, 0x{start + size:x}) overlaps {otherDescription} [0x{otherStart:x}, 0x{otherStart + otherSize:x}) of the same physical memory: two owners would hand out the same pages."),
            nameof(start));

    [DoesNotReturn]
    public static void RamRangesOverlap(HostMemoryRange q, HostMemoryRange r, string paramName) =>
        throw new ArgumentException(
            $"RAM ranges [0x{q.PhysicalAddress:x}, 0x{q.PhysicalAddress + q.Length:x}) and [0x{r.PhysicalAddress:x}, 0x{r.PhysicalAddress + r.Length:x}) overlap.", paramName);

    [DoesNotReturn]
    public static void MemoryDisposed() => throw new ObjectDisposedException(nameof(Memory.PhysicalMemory));

    [DoesNotReturn]
    public static void DisposeInsideAccessScope() =>
        throw new InvalidOperationException("PhysicalMemory.Dispose was called inside an access scope of the same memory on this thread (from a callback of a call in progress); it would wait for itself.");

    [DoesNotReturn]
    public static void DomainFreed(DomainType type) =>
        throw new ObjectDisposedException(nameof(IDomain), $"the {type} domain was already freed (iommu_domain_free); it cannot be freed, attached or mapped again");

    [DoesNotReturn]
    public static void DomainStillAttached(IommuGroup group) =>
        throw new InvalidOperationException($"Domain is still attached to {group}; detach it before freeing.");

    [DoesNotReturn]
    public static void ForeignDomainMismatch(IIommuOps ops, DomainType type, IDomain domain) =>
        throw new InvalidOperationException($"{ops.GetType().Name}.DomainAlloc({type}) returned a {domain.GetType().Name} that reports ops {domain.Ops?.GetType().Name ?? "null"} and type {domain.Type}; a domain not derived from IommuDomain must report the ops and type it was allocated for");

    [DoesNotReturn]
    public static void GroupReleased(IommuGroup group) => throw new InvalidOperationException($"{group} was already released.");

    [DoesNotReturn]
    public static void GroupRefUnderflow(IommuGroup group) => throw new InvalidOperationException($"{group} reference count underflow.");

    [DoesNotReturn]
    public static void DeviceAlreadyInGroup(Device device) =>
        throw new InvalidOperationException($"Device {device.Name} is already in {device.IommuGroup}.");

    [DoesNotReturn]
    public static void DeviceAlreadyOnBus(Device device) =>
        throw new InvalidOperationException($"Device {device.Name} is already on bus '{device.Bus?.Name}'.");

    [DoesNotReturn]
    public static void DeviceNotOnBus(Device device, string busName) =>
        throw new InvalidOperationException($"Device {device.Name} is not on bus '{busName}'.");

    [DoesNotReturn]
    public static void NoPageSizeFits(ulong pgsizeBitmap, ulong iova, ulong paddr, ulong size) =>
        throw new InvalidOperationException(
            string.Create(CultureInfo.InvariantCulture, $"No page size of 0x{pgsizeBitmap:x} fits iova 0x{iova:x} pa 0x{paddr:x} size 0x{size:x}."));

    [DoesNotReturn]
    public static void HostRangeInvalid(ulong physicalBase, ulong size) =>
        throw new ArgumentOutOfRangeException(
            nameof(size), string.Create(CultureInfo.InvariantCulture, $"range 0x{physicalBase:x}+0x{size:x} must be page aligned and inside physical memory"));

    [DoesNotReturn]
    public static void PfnNotPinned(ulong pfn) =>
        throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"pfn 0x{pfn:x} is not pinned"));

    [DoesNotReturn]
    public static void HugePagesExhausted(ulong length) =>
        throw new InsufficientMemoryException(string.Create(CultureInfo.InvariantCulture, $"host page pool cannot back {length} bytes of huge pages"));

    [DoesNotReturn]
    public static void AddressNotPageAligned(ulong vaddr) =>
        throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"address 0x{vaddr:x} is not page aligned"), nameof(vaddr));

    [DoesNotReturn]
    public static void HugePageAreaSplit(ulong at) =>
        throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"0x{at:x} would split a huge-page area off its 2 MiB boundary"), nameof(at));

    [DoesNotReturn]
    public static void RangeOutsideUserSpace(ulong vaddr, ulong length) =>
        throw new ArgumentOutOfRangeException(
            nameof(length), string.Create(CultureInfo.InvariantCulture, $"range 0x{vaddr:x}+0x{length:x} wraps or leaves the user address space"));

    [DoesNotReturn]
    public static void ProcessExited(string name) => throw new InvalidOperationException($"{name} has exited");

    [DoesNotReturn]
    public static void NotifierRegistered(string name, string paramName) => throw new ArgumentException($"the notifier is already registered on {name}", paramName);
}
