namespace Iommu;

/// <summary>
/// The human-readable detail of the last failure on this thread: which device, range or limit was
/// at fault. Like C's <c>errno</c> it is per thread; unlike it, it never decides behaviour.
/// </summary>
/// <remarks>
/// Failure paths return an <see cref="Errno"/> (cheap, allocation-free on success). To still give
/// people a precise message, the code that fails records a detail here and
/// <see cref="ErrnoExtensions.ThrowIfError(Errno, string?)"/> picks it up. The detail is keyed by
/// the errno it explains, so an unrelated older detail is never attached to a different error.
/// It holds no platform state: independent platforms on one thread only ever see the detail of
/// the call that just failed.
/// <para>Lifetime: the detail belongs to the last call into the libraries on this thread. The
/// outermost entry of every call (the access scope each public entry point opens) forgets the
/// previous detail, so after a call that succeeds <see cref="LastMessage"/> is null and
/// <see cref="LastErrno"/> is <see cref="Errno.None"/>; read them (or call
/// <see cref="ErrnoExtensions.ThrowIfError(Errno, string?)"/>) before the next call. Forgetting
/// costs the outermost entry a read of this thread's record (a write only when there was a
/// failure); nested calls and the map, unmap and DMA work itself pay nothing. Two calls that report
/// no errno may leave the detail as it was, as a successful C call leaves <c>errno</c>:
/// <c>iommu_iova_to_phys</c>, and a device's DMA that the unit serves from its translation memo; on
/// memory the library owns they open no scope (see <see cref="Memory.PhysicalMemory.Dispose"/>).</para>
/// <para>Unwinding: cleanup that runs while a failure is being returned (detach, free, unmap of
/// what the failing call had done) calls code that records or forgets details of its own; wrap it
/// in <see cref="PreserveWhileUnwinding"/> so the first failure's detail is the one reported.</para>
/// </remarks>
public static class ErrorDetail
{
    // One thread-static holder rather than two thread-static fields: one thread-local lookup reaches
    // both, and a hot path that already has the holder (an access scope's slot carries its thread's)
    // reaches it with none. Created on the thread's first failure, then reused.
    [ThreadStatic]
    private static State? t_state;

    /// <summary>The errno of the last recorded failure on this thread (or <see cref="Errno.None"/>).</summary>
    public static Errno LastErrno => t_state?.Errno ?? Errno.None;

    /// <summary>The detail of the last recorded failure on this thread (or null).</summary>
    public static string? LastMessage => t_state?.Message;

    /// <summary>The calling thread's holder, created on first use.</summary>
    internal static State OfThisThread => t_state ??= new State();

    /// <summary>Records <paramref name="message"/> as the reason for <paramref name="errno"/> and returns the errno.</summary>
    /// <param name="errno">The error being returned.</param>
    /// <param name="message">Which device, range or limit was at fault.</param>
    /// <returns><paramref name="errno"/>, so that failure sites read <c>return ErrorDetail.Fail(...)</c>.</returns>
    public static Errno Fail(Errno errno, string message)
    {
        State s = OfThisThread;
        s.Errno = errno;
        s.Message = message;
        return errno;
    }

    /// <summary>Takes (and clears) the recorded detail if it explains <paramref name="errno"/>.</summary>
    /// <param name="errno">The error about to be reported.</param>
    /// <returns>The detail or null.</returns>
    public static string? Take(Errno errno)
    {
        State? s = t_state;
        if (s is null)
        {
            return null;
        }

        string? message = s.Errno == errno ? s.Message : null;
        s.Clear();
        return message;
    }

    /// <summary>Forgets the recorded detail.</summary>
    public static void Clear() => t_state?.Clear();

    /// <summary>
    /// Keeps the detail recorded now (the failure being returned) while the cleanup inside the
    /// returned scope runs: whatever that cleanup records or forgets, disposing the scope puts the
    /// first failure's errno and detail back.
    /// </summary>
    /// <returns>The scope; dispose it on this thread (<c>using (ErrorDetail.PreserveWhileUnwinding()) { … }</c>).</returns>
    /// <remarks>Scopes nest; the outermost one decides. Costs nothing unless there is a failure to unwind.</remarks>
    public static ErrorDetailUnwindScope PreserveWhileUnwinding()
    {
        State s = OfThisThread;
        return new ErrorDetailUnwindScope(s, s.Errno, s.Message);
    }

    /// <summary>One thread's last failure.</summary>
    internal sealed class State
    {
#pragma warning disable CA1051 // a thread's own record: plain fields, written only by that thread
        public Errno Errno;
        public string? Message;
#pragma warning restore CA1051

        /// <summary>Forgets the detail; writes only when there is one (a hot path's check is a read).</summary>
        public void Clear()
        {
            if (Errno != Errno.None || Message is not null)
            {
                Errno = Errno.None;
                Message = null;
            }
        }
    }
}
