using System.Globalization;

namespace Iommu.Reliability.Tests.Chaos;

/// <summary>What a chaos step does. The targets are picked among every object the run ever made, live or not.</summary>
internal enum ChaosKind
{
    DomainAlloc, DomainFree, Attach, Detach, Map, Unmap, IovaToPhys,
    AuxEnable, AuxDisable, AuxAttach, AuxDetach, PasidAttach, PasidDetach,
    DmaMap, DmaUnmap, ClockAdvance,
    Spawn, Mmap, Munmap, Exit, SvaBind, SvaUnbind,
    VfioRegister, ContainerOpen, GroupOpen, GroupSetContainer, GroupUnset, GroupClose, SetIommu, MapDma, UnmapDma, ContainerClose, DeviceFdOpen, DeviceFdClose,
    MdevCreate, MdevRemove, MdevOpen, MdevClose, MdevPin, MdevUnpin, VendorSetup,
    UacceOpen, UacceStart, UacceClose,
    HotRemove, ReAdd, ReadFaults, Export,
    DmaMapSg, DmaUnmapSg, DmaAllocCoherent, DmaFreeCoherent, DmaSetMask,
    GroupRemove, GroupAdd, DmaMove,
    GroupAttach, GroupDetach, UnmapFast,
}

/// <summary>One step: A, B and C pick targets (modulo the number of candidates when the step runs) and sizes.</summary>
internal readonly record struct ChaosOp(ChaosKind Kind, int A, int B, int C)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Kind}({A},{B},{C})");
}
