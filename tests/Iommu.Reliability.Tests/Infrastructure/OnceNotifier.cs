using Iommu.Mm;

namespace Iommu.Reliability.Tests.Infrastructure;

/// <summary>An MMU notifier that runs <paramref name="once"/> on the first invalidation it hears of (a user's mirror, in lock-order tests).</summary>
internal sealed class OnceNotifier(Action once) : MmuNotifier
{
    private int _ran;

    public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end)
    {
        if (Interlocked.Exchange(ref _ran, 1) == 0)
        {
            once();
        }
    }
}
