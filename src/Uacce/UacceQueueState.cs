using Iommu;

namespace Uacce;

/// <summary>State of a queue (<c>enum uacce_q_state</c>). INIT →(START_Q)→ STARTED →(PUT_Q, release, remove)→ ZOMBIE; nothing leaves ZOMBIE.</summary>
[KernelSymbol("enum uacce_q_state")]
public enum UacceQueueState
{
    /// <summary>Released: every command fails with -ENXIO (<c>UACCE_Q_ZOMBIE</c>).</summary>
    Zombie = 0,

    /// <summary>Opened, not started (<c>UACCE_Q_INIT</c>).</summary>
    Init = 1,

    /// <summary>Started by <see cref="UacceCommands.StartQ"/> (<c>UACCE_Q_STARTED</c>).</summary>
    Started = 2,
}
